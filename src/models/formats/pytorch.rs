//! PyTorch checkpoints (`torch.save`, torch >= 1.6): a state dict read into named CPU tensors.
//!
//! The file is a zip archive (read by the private `torch_zip` module) holding
//! `<folder>/data.pkl`, the pickled object, and one raw storage per `<folder>/data/<key>`. The
//! pickle is read with candle's unpickler; each tensor in it names a storage, an offset, a shape
//! and strides (elements).
//! Many tensors may be views into one storage (optimisers that keep flat fp32 masters save
//! that way: OpenAI's consistency models hold 541 views into 2 storages), so each storage is
//! looked up once in the memory-mapped archive and every view, contiguous or not, is copied
//! out of it, bounds-checked, into a contiguous tensor of the stored dtype.
//!
//! The top-level object is either the state dict itself or a dict holding it under a key such
//! as `model` or `ema` ([`Checkpoint::key`] says which). Legacy (pre-1.6) and TorchScript files
//! are refused with a message saying how to re-save them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{Device, Tensor};

use super::torch_zip::{TorchZip, ZipError};

/// The keys a nested checkpoint may keep its state dict under, in order of preference.
pub const STATE_DICT_KEYS: [&str; 6] = ["state_dict", "model", "ema", "model_ema", "net", "params"];

/// The prefix `torch.nn.DataParallel` puts before every parameter name.
const DATA_PARALLEL_PREFIX: &str = "module.";

/// How a legacy file starts: pickle protocol 2 (`\x80\x02`), then the magic number
/// 0x1950a86a20f9469cfc6c as a 10-byte `LONG1`.
const LEGACY_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// A pickled dict's key-value pairs, as candle's unpickler gives them.
type Items = Vec<(Object, Object)>;

/// The longest summary of a candle unpickler message kept in an error.
const MAX_MESSAGE: usize = 160;

/// A state dict read from a PyTorch checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The tensors by name (a DataParallel `module.` prefix removed), contiguous, on the CPU,
    /// in the dtype they were saved in.
    pub tensors: BTreeMap<String, Tensor>,
    /// The top-level key that held the state dict (e.g. `model`), or `None` when the file's
    /// top-level object is the state dict itself.
    pub key: Option<String>,
}

/// Why a PyTorch checkpoint cannot be read. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PytorchError {
    /// The file cannot be opened or read.
    #[error("cannot read `{}`: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a zip archive, nor a legacy torch file.
    #[error("`{}` is not a PyTorch checkpoint (zip) file", .path.display())]
    NotCheckpoint {
        /// The file.
        path: PathBuf,
    },
    /// The file was written in torch's pre-1.6 format.
    #[error(
        "`{}` is a PyTorch checkpoint in the legacy (pre-1.6) format, which mapga does not read; \
         re-save it in the zip format (torch >= 1.6 writes it) with \
         python -c \"import torch; torch.save(torch.load('OLD.pt', map_location='cpu'), \
         'NEW.pt')\"; `mapga convert NEW.pt NEW.safetensors` then makes the fastest file to \
         load",
        .path.display()
    )]
    Legacy {
        /// The file.
        path: PathBuf,
    },
    /// The file is a TorchScript archive (`torch.jit.save`).
    #[error(
        "`{}` is a TorchScript archive; TorchScript modules are not supported, save the \
         model's state_dict instead (torch.save(model.state_dict(), 'weights.pt'))",
        .path.display()
    )]
    TorchScript {
        /// The file.
        path: PathBuf,
    },
    /// The storages were written big-endian.
    #[error(
        "`{}` was saved on a big-endian machine; only little-endian checkpoints are supported \
         (re-save it on a little-endian machine, or as safetensors)",
        .path.display()
    )]
    BigEndian {
        /// The file.
        path: PathBuf,
    },
    /// The zip archive is corrupt, or does not have the entries torch writes.
    #[error("`{}` is not a readable PyTorch checkpoint: {problem}", .path.display())]
    Archive {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// `data.pkl` cannot be unpickled.
    #[error("cannot unpickle the object in `{}`: {problem}", .path.display())]
    Pickle {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The pickled object is not a state dict, nor a dict holding one.
    #[error("`{}` holds no state dict: {found}", .path.display())]
    NoStateDict {
        /// The file.
        path: PathBuf,
        /// What the file holds instead.
        found: String,
    },
    /// A tensor's record or data is unusable.
    #[error("`{}`: tensor `{name}` {problem}", .path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name in the state dict.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Reads the state dict of the PyTorch checkpoint at `path`.
///
/// Fails on legacy, TorchScript, big-endian or corrupt files, when no state dict can be found
/// (the error lists the top-level keys), and on tensors of a storage type candle lacks or
/// whose views reach outside their storage.
pub fn read_pytorch(path: &Path) -> Result<Checkpoint, PytorchError> {
    sniff(path)?;
    let archive = TorchZip::open(path).map_err(|e| archive_error(path, e))?;
    read_archive(path, &archive)
}

/// The names and shapes of the state dict's tensors, from the archive's pickle alone (no
/// storage is read): what the checker needs to know about a multi-gigabyte checkpoint.
pub fn read_pytorch_shapes(path: &Path) -> Result<BTreeMap<String, Vec<usize>>, PytorchError> {
    sniff(path)?;
    let archive = TorchZip::open(path).map_err(|e| archive_error(path, e))?;
    let folder = data_folder(path, &archive)?;
    check_byte_order(path, &archive, &folder)?;
    let pickle = archive
        .entry(&format!("{folder}/data.pkl"))
        .map_err(|e| archive_error(path, e))?
        .ok_or_else(|| archive_problem(path, "its data.pkl entry vanished"))?;
    let (items, _) = state_dict(path, unpickle(path, pickle)?)?;
    let shapes = tensor_infos(path, items, &folder)?
        .into_iter()
        .map(|info| (info.name.clone(), info.layout.dims().to_vec()))
        .collect();
    Ok(strip_data_parallel(shapes))
}

/// Reads the state dict out of an opened archive.
fn read_archive(path: &Path, archive: &TorchZip) -> Result<Checkpoint, PytorchError> {
    let folder = data_folder(path, archive)?;
    check_byte_order(path, archive, &folder)?;
    let pickle = archive
        .entry(&format!("{folder}/data.pkl"))
        .map_err(|e| archive_error(path, e))?
        .ok_or_else(|| archive_problem(path, "its data.pkl entry vanished"))?;
    let (items, key) = state_dict(path, unpickle(path, pickle)?)?;
    let infos = tensor_infos(path, items, &folder)?;
    let tensors = build_tensors(path, archive, infos)?;
    Ok(Checkpoint {
        tensors: strip_data_parallel(tensors),
        key,
    })
}

/// Checks the first bytes: a zip archive passes, a legacy torch file or anything else fails.
fn sniff(path: &Path) -> Result<(), PytorchError> {
    let io = |source| PytorchError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(LEGACY_MAGIC.len());
    std::fs::File::open(path)
        .map_err(io)?
        .take(LEGACY_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.starts_with(b"PK\x03\x04") {
        Ok(())
    } else if is_legacy(&head) {
        Err(PytorchError::Legacy {
            path: path.to_path_buf(),
        })
    } else {
        Err(PytorchError::NotCheckpoint {
            path: path.to_path_buf(),
        })
    }
}

/// Whether `head` starts like a legacy torch file (any pickle protocol, then the magic number).
fn is_legacy(head: &[u8]) -> bool {
    head.len() == LEGACY_MAGIC.len() && head[0] == 0x80 && head[2..] == LEGACY_MAGIC[2..]
}

/// The [`PytorchError`] for a zip-level failure.
fn archive_error(path: &Path, error: ZipError) -> PytorchError {
    match error {
        ZipError::Io(source) => PytorchError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => archive_problem(path, other.to_string()),
    }
}

/// A [`PytorchError::Archive`].
fn archive_problem(path: &Path, problem: impl Into<String>) -> PytorchError {
    PytorchError::Archive {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The archive's folder (`<folder>/data.pkl`), refusing TorchScript archives.
fn data_folder(path: &Path, archive: &TorchZip) -> Result<String, PytorchError> {
    let second_component = |name: &str| name.split('/').nth(1).map(str::to_owned);
    let torchscript = archive
        .entries()
        .iter()
        .filter_map(|e| second_component(&e.name))
        .any(|part| part == "constants.pkl" || part == "code");
    if torchscript {
        return Err(PytorchError::TorchScript {
            path: path.to_path_buf(),
        });
    }
    let folders: Vec<&str> = archive
        .entries()
        .iter()
        .filter_map(|e| e.name.strip_suffix("/data.pkl"))
        .filter(|folder| !folder.contains('/'))
        .collect();
    match folders.as_slice() {
        [folder] => Ok((*folder).to_owned()),
        [] => Err(archive_problem(
            path,
            "the archive has no `<folder>/data.pkl` entry",
        )),
        several => Err(archive_problem(
            path,
            format!(
                "the archive has {} data.pkl entries (in {})",
                several.len(),
                several.join(", ")
            ),
        )),
    }
}

/// Refuses storages written big-endian (`<folder>/byteorder` says `big`).
fn check_byte_order(path: &Path, archive: &TorchZip, folder: &str) -> Result<(), PytorchError> {
    match archive
        .entry(&format!("{folder}/byteorder"))
        .map_err(|e| archive_error(path, e))?
    {
        None | Some(b"little") => Ok(()),
        Some(b"big") => Err(PytorchError::BigEndian {
            path: path.to_path_buf(),
        }),
        Some(other) => Err(archive_problem(
            path,
            format!(
                "unknown byte order `{}`",
                String::from_utf8_lossy(other).trim()
            ),
        )),
    }
}

/// Unpickles `data.pkl` with candle's unpickler, after [`sanitise`] has made sure candle can
/// read it without panicking.
fn unpickle(path: &Path, pickle: &[u8]) -> Result<Object, PytorchError> {
    let error = |problem: String| PytorchError::Pickle {
        path: path.to_path_buf(),
        problem,
    };
    let pickle = sanitise(pickle).map_err(error)?;
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut &pickle[..])
        .map_err(|e| error(summarise(&e)))?;
    stack.finalize().map_err(|e| error(summarise(&e)))
}

/// Walks the pickle's opcodes, checking that each is one candle's unpickler knows and that its
/// argument is in the data; integers wider than 64 bits (metadata such as seeds; tensor
/// records never hold them) are replaced by 0.
///
/// This guards against what candle does not check: a `LONG1` wider than 8 bytes (a shift
/// overflow, which panics in debug builds), a string length past the end (a huge allocation),
/// and `DICT`, which candle reads as `EMPTY_DICT`, silently losing the dict's items.
fn sanitise(pickle: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let mut wide_integers = Vec::new();
    let mut pos = 0;
    let mut protocol = 0;
    loop {
        let op = *pickle
            .get(pos)
            .ok_or("the pickle ends before its STOP opcode")?;
        let arg = pickle.get(pos + 1..).unwrap_or_default();
        let arg_len = match op {
            b'.' => return Ok(replace_wide_integers(pickle, &wide_integers)),
            0x80 => {
                protocol = *arg.first().unwrap_or(&0);
                1
            }
            b'q' | b'K' | b'h' => 1,
            b'M' => 2,
            b'r' | b'J' | b'j' => 4,
            b'G' => 8,
            b'X' => le_u32(arg).map_or(usize::MAX, |len| 4usize.saturating_add(len as usize)),
            0x8a => match arg.first() {
                Some(&n) => {
                    if n > 8 {
                        wide_integers.push(pos..pos + 2 + usize::from(n));
                    }
                    1 + usize::from(n)
                }
                None => usize::MAX,
            },
            b'c' => global_len(arg).unwrap_or(usize::MAX),
            b')' | b'R' | b'(' | b't' | b'Q' | b'N' | b's' | b'u' | b'}' | b'b' | 0x81 | b']'
            | b'a' | b'e' => 0,
            0x85..=0x89 => 0,
            other => return Err(unsupported_opcode(other, pos, protocol)),
        };
        if arg_len > arg.len() {
            return Err(format!(
                "the pickle is cut off (opcode 0x{op:02x} at byte {pos})"
            ));
        }
        pos += 1 + arg_len;
    }
}

/// `pickle` with each `LONG1` at `ranges` (opcode to end of argument) replaced by a 0.
fn replace_wide_integers<'a>(pickle: &'a [u8], ranges: &[Range<usize>]) -> Cow<'a, [u8]> {
    if ranges.is_empty() {
        return Cow::Borrowed(pickle);
    }
    let mut out = Vec::with_capacity(pickle.len());
    let mut copied = 0;
    for range in ranges {
        out.extend_from_slice(&pickle[copied..range.start]);
        out.extend_from_slice(&[0x8a, 0]);
        copied = range.end;
    }
    out.extend_from_slice(&pickle[copied..]);
    Cow::Owned(out)
}

/// The length of a `GLOBAL` argument: two newline-terminated lines.
fn global_len(arg: &[u8]) -> Option<usize> {
    let first = arg.iter().position(|&b| b == b'\n')? + 1;
    let second = arg.get(first..)?.iter().position(|&b| b == b'\n')? + 1;
    Some(first + second)
}

/// The message for an opcode candle's unpickler does not know: `op` at byte `pos` of a pickle
/// of `protocol`.
fn unsupported_opcode(op: u8, pos: usize, protocol: u8) -> String {
    let hint = if protocol > 2 {
        "; the file was pickled with a protocol above 2: re-save it with torch.save's default \
         (no pickle_protocol argument)"
    } else {
        ""
    };
    format!("unsupported pickle opcode 0x{op:02x} at byte {pos}{hint}")
}

/// The little-endian `u32` at the start of `bytes`.
fn le_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// A candle error's first line, without Debug dumps of pickle objects, and not too long.
fn summarise(error: &candle_core::Error) -> String {
    let message = error.to_string();
    let line = message.lines().next().unwrap_or_default();
    if line.starts_with("conversion error on") || line.starts_with("expected a") {
        return "an object in the pickle does not have the structure torch gives it".to_owned();
    }
    match line.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// The state dict's items and the top-level key that held it, if any.
fn state_dict(path: &Path, object: Object) -> Result<(Items, Option<String>), PytorchError> {
    let no_state_dict = |found: String| PytorchError::NoStateDict {
        path: path.to_path_buf(),
        found,
    };
    let Object::Dict(items) = object else {
        return Err(no_state_dict(format!(
            "its top-level object is {}, not a dict of tensors",
            describe(&object)
        )));
    };
    if items.iter().any(|(_, value)| is_tensor(value)) {
        return Ok((items, None));
    }
    let candidates: Vec<usize> = (0..items.len())
        .filter(|&i| holds_tensors(&items[i].1))
        .collect();
    let preferred = STATE_DICT_KEYS.iter().find_map(|key| {
        candidates
            .iter()
            .copied()
            .find(|&i| matches!(&items[i].0, Object::Unicode(k) if k == key))
    });
    let chosen = match (preferred, candidates.as_slice()) {
        (Some(i), _) => i,
        (None, [i]) => *i,
        (None, []) => return Err(no_state_dict(no_tensors_found(&items))),
        (None, several) => {
            let mut keys: Vec<String> =
                several.iter().map(|&i| describe_key(&items[i].0)).collect();
            keys.sort();
            return Err(no_state_dict(format!(
                "{} entries hold dicts of tensors ({}) and none is called {}",
                keys.len(),
                keys.join(", "),
                STATE_DICT_KEYS.join(", ")
            )));
        }
    };
    let (key, value) = items
        .into_iter()
        .nth(chosen)
        .ok_or_else(|| no_state_dict("an entry vanished".to_owned()))?;
    match value {
        Object::Dict(sub) => Ok((sub, Some(describe_key(&key)))),
        other => Err(no_state_dict(format!(
            "its entry {} is {}",
            describe_key(&key),
            describe(&other)
        ))),
    }
}

/// Whether `value` is a dict with a tensor among its values.
fn holds_tensors(value: &Object) -> bool {
    matches!(value, Object::Dict(items) if items.iter().any(|(_, v)| is_tensor(v)))
}

/// The message for a top-level dict with no tensors in it or in its values.
fn no_tensors_found(items: &[(Object, Object)]) -> String {
    const SHOWN: usize = 20;
    if items.is_empty() {
        return "its top-level object is an empty dict".to_owned();
    }
    let mut keys: Vec<String> = items.iter().map(|(k, _)| describe_key(k)).collect();
    keys.sort();
    keys.truncate(SHOWN);
    if items.len() > SHOWN {
        keys.push(format!("and {} more", items.len() - SHOWN));
    }
    format!(
        "no tensors in its top-level dict, nor in a dict under one of its keys ({})",
        keys.join(", ")
    )
}

/// The pickled function that rebuilds `value`, when `value` is a tensor record
/// (`torch._utils._rebuild_*` or `torch._tensor._rebuild_from_type_v2`).
fn rebuild_function(value: &Object) -> Option<String> {
    let Object::Reduce { callable, .. } = value else {
        return None;
    };
    let Object::Class {
        module_name,
        class_name,
    } = callable.as_ref()
    else {
        return None;
    };
    let rebuilds = (module_name == "torch._utils" && class_name.starts_with("_rebuild_"))
        || (module_name == "torch._tensor" && class_name == "_rebuild_from_type_v2");
    rebuilds.then(|| format!("{module_name}.{class_name}"))
}

/// Whether `value` is a tensor record.
fn is_tensor(value: &Object) -> bool {
    rebuild_function(value).is_some()
}

/// A dict key in words: a string as is, a number as digits, anything else by its kind.
fn describe_key(key: &Object) -> String {
    match key {
        Object::Unicode(s) => s.clone(),
        Object::Int(i) => i.to_string(),
        Object::Long(i) => i.to_string(),
        other => format!("<{}>", describe(other)),
    }
}

/// An unpickled object in a few words.
fn describe(object: &Object) -> String {
    let class = |callable: &Object| match callable {
        Object::Class {
            module_name,
            class_name,
        } => format!("an object of class `{module_name}.{class_name}`"),
        _ => "an object".to_owned(),
    };
    match object {
        _ if is_tensor(object) => "a tensor".to_owned(),
        Object::Dict(_) => "a dict".to_owned(),
        Object::List(_) => "a list".to_owned(),
        Object::Tuple(_) => "a tuple".to_owned(),
        Object::Int(_) | Object::Long(_) => "an integer".to_owned(),
        Object::Float(_) => "a float".to_owned(),
        Object::Unicode(_) => "a string".to_owned(),
        Object::Bool(_) => "a boolean".to_owned(),
        Object::None => "None".to_owned(),
        Object::Reduce { callable, .. } => class(callable),
        Object::Build { callable, .. } => match callable.as_ref() {
            Object::Reduce { callable, .. } => class(callable),
            other => class(other),
        },
        Object::Class {
            module_name,
            class_name,
        } => format!("the class `{module_name}.{class_name}`"),
        Object::Mark | Object::PersistentLoad(_) => "a pickle internal".to_owned(),
    }
}

/// The tensor records of the state dict `items`, skipping values that are not tensors.
fn tensor_infos(path: &Path, items: Items, folder: &str) -> Result<Vec<TensorInfo>, PytorchError> {
    let storage_dir = PathBuf::from(format!("{folder}/data"));
    let mut infos = Vec::with_capacity(items.len());
    for (key, value) in items {
        let Some(function) = rebuild_function(&value) else {
            continue;
        };
        let name = describe_key(&key);
        let error = |problem: String| PytorchError::Tensor {
            path: path.to_path_buf(),
            name: name.clone(),
            problem,
        };
        if !matches!(key, Object::Unicode(_)) {
            return Err(error(
                "is stored under a key that is not a string".to_owned(),
            ));
        }
        if !candle_can_read(&value) {
            return Err(error(format!("has a malformed `{function}` record")));
        }
        match value.into_tensor_info(key, &storage_dir) {
            Ok(Some(info)) => infos.push(info),
            Ok(None) => {
                return Err(error(format!(
                    "is stored with `{function}`, which is not supported"
                )))
            }
            Err(e) => {
                return Err(error(format!(
                    "cannot be read: {}",
                    storage_hint(summarise(&e))
                )))
            }
        }
    }
    Ok(infos)
}

/// `message`, with the storage types candle reads when it says a storage type is unsupported.
fn storage_hint(message: String) -> String {
    if message.starts_with("unsupported storage type") {
        format!("{message} (supported: Float, Double, Half, BFloat16, Byte, Long)")
    } else {
        message
    }
}

/// Whether [`Object::into_tensor_info`] can read `value` without panicking: it indexes the
/// record's tuples without checking their lengths.
fn candle_can_read(value: &Object) -> bool {
    let Object::Reduce { callable, args } = value else {
        return true;
    };
    let Object::Class {
        module_name,
        class_name,
    } = callable.as_ref()
    else {
        return true;
    };
    let Object::Tuple(items) = args.as_ref() else {
        return true;
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._tensor", "_rebuild_from_type_v2") => match (items.first(), items.get(2)) {
            (Some(function), Some(inner)) => rebuild_v2_can_read(function, inner),
            _ => false,
        },
        ("torch._utils", "_rebuild_parameter") => match items.first() {
            Some(Object::Reduce { callable, args }) => rebuild_v2_can_read(callable, args),
            Some(_) => true,
            None => false,
        },
        _ => rebuild_v2_can_read(callable, args),
    }
}

/// Whether a `_rebuild_tensor_v2(storage, offset, size, stride, ...)` call has the 4 arguments
/// and the 5-element persistent storage id candle takes apart.
fn rebuild_v2_can_read(function: &Object, args: &Object) -> bool {
    let is_v2 = matches!(function, Object::Class { module_name, class_name }
        if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2");
    let Object::Tuple(args) = args else {
        return true;
    };
    if !is_v2 {
        return true;
    }
    if args.len() < 4 {
        return false;
    }
    match args.first() {
        Some(Object::PersistentLoad(id)) => {
            !matches!(id.as_ref(), Object::Tuple(id) if id.len() < 5)
        }
        _ => true,
    }
}

/// Copies every tensor out of its storage, looking each storage up once.
fn build_tensors(
    path: &Path,
    archive: &TorchZip,
    infos: Vec<TensorInfo>,
) -> Result<BTreeMap<String, Tensor>, PytorchError> {
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    let mut tensors = BTreeMap::new();
    for info in infos {
        let error = |problem: String| PytorchError::Tensor {
            path: path.to_path_buf(),
            name: info.name.clone(),
            problem,
        };
        let storage = match storages.get(&info.path) {
            Some(storage) => *storage,
            None => {
                let storage = archive
                    .entry(&info.path)
                    .map_err(|e| error(format!("cannot be read: {e}")))?
                    .ok_or_else(|| {
                        error(format!(
                            "needs storage `{}`, which the archive lacks",
                            info.path
                        ))
                    })?;
                storages.insert(info.path.clone(), storage);
                storage
            }
        };
        let tensor = tensor_from_storage(&info, storage).map_err(error)?;
        tensors.insert(info.name, tensor);
    }
    Ok(tensors)
}

/// The view `info` describes, copied out of `storage` into a contiguous CPU tensor.
fn tensor_from_storage(info: &TensorInfo, storage: &[u8]) -> Result<Tensor, String> {
    let elem = info.dtype.size_in_bytes();
    let stated = info
        .storage_size
        .checked_mul(elem)
        .ok_or("has an impossibly large storage")?;
    let storage = storage.get(..stated).ok_or_else(|| {
        format!(
            "has a storage of {} bytes, fewer than the {} {:?} elements the checkpoint states",
            storage.len(),
            info.storage_size,
            info.dtype
        )
    })?;
    let (dims, strides) = (info.layout.dims(), info.layout.stride());
    let offset = info.layout.start_offset() / elem;
    let count = check_view(dims, strides, offset, info.storage_size)?;
    let bytes = if count == 0 {
        Cow::Borrowed(&[][..])
    } else if is_row_major(dims, strides) {
        Cow::Borrowed(
            storage
                .get(offset * elem..(offset + count) * elem)
                .ok_or("reaches past its storage")?,
        )
    } else {
        Cow::Owned(gather(storage, elem, offset, dims, strides).ok_or("reaches past its storage")?)
    };
    Tensor::from_raw_buffer(&bytes, info.dtype, dims, &Device::Cpu)
        .map_err(|e| format!("cannot be built: {}", summarise(&e)))
}

/// Checks that the view (`dims`, `strides`, `offset`, in elements) stays inside a storage of
/// `storage_len` elements; returns its element count.
fn check_view(
    dims: &[usize],
    strides: &[usize],
    offset: usize,
    storage_len: usize,
) -> Result<usize, String> {
    if dims.len() != strides.len() {
        return Err(format!(
            "has {} dimensions but {} strides",
            dims.len(),
            strides.len()
        ));
    }
    let too_large = || format!("has an impossibly large shape {dims:?}");
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_large)?;
    if count == 0 {
        return Ok(0);
    }
    let last = dims
        .iter()
        .zip(strides)
        .try_fold(offset, |acc, (&d, &s)| {
            (d - 1)
                .checked_mul(s)
                .and_then(|span| acc.checked_add(span))
        })
        .ok_or_else(too_large)?;
    if last >= storage_len {
        return Err(format!(
            "(shape {dims:?}, strides {strides:?}, offset {offset}) reaches element {last} of a \
             storage of {storage_len}"
        ));
    }
    Ok(count)
}

/// Whether a view with these `dims` and `strides` is contiguous in row-major order (strides of
/// dimensions of size 1 do not matter).
fn is_row_major(dims: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1;
    for (&d, &s) in dims.iter().zip(strides).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

/// Copies a strided view (checked by [`check_view`], at least one element) into row-major
/// order, a contiguous run of the last dimension at a time when its stride is 1.
fn gather(
    storage: &[u8],
    elem: usize,
    offset: usize,
    dims: &[usize],
    strides: &[usize],
) -> Option<Vec<u8>> {
    let (&inner, outer_dims) = dims.split_last()?;
    let (&inner_stride, outer_strides) = strides.split_last()?;
    let count: usize = dims.iter().product();
    let mut out = Vec::with_capacity(count * elem);
    let mut index = vec![0usize; outer_dims.len()];
    loop {
        let base = offset
            + index
                .iter()
                .zip(outer_strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        if inner_stride == 1 {
            out.extend_from_slice(storage.get(base * elem..(base + inner) * elem)?);
        } else {
            for j in 0..inner {
                let at = (base + j * inner_stride) * elem;
                out.extend_from_slice(storage.get(at..at + elem)?);
            }
        }
        if !advance(&mut index, outer_dims) {
            return Some(out);
        }
    }
}

/// Steps the multi-index `index` over `dims` in row-major order; false once it wraps around.
fn advance(index: &mut [usize], dims: &[usize]) -> bool {
    for (i, &d) in index.iter_mut().zip(dims).rev() {
        *i += 1;
        if *i < d {
            return true;
        }
        *i = 0;
    }
    false
}

/// Removes DataParallel's `module.` prefix when every name has it.
fn strip_data_parallel<T>(tensors: BTreeMap<String, T>) -> BTreeMap<String, T> {
    if tensors.is_empty()
        || !tensors
            .keys()
            .all(|name| name.starts_with(DATA_PARALLEL_PREFIX))
    {
        return tensors;
    }
    tensors
        .into_iter()
        .map(|(name, tensor)| (name[DATA_PARALLEL_PREFIX.len()..].to_owned(), tensor))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::formats::torch_zip::tests::{write_zip, Layout};
    use candle_core::DType;

    /// A file of `tests/fixtures/adm/`.
    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/adm")
            .join(name)
    }

    /// `t`'s values widened to f32, in row-major order.
    fn values(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Checks that `checkpoint` has exactly the tensors of `cm_cond.safetensors`, in `dtype`, each
    /// value within `tolerance(reference value)`.
    fn assert_matches_cm_cond(checkpoint: &Checkpoint, dtype: DType, tolerance: fn(f32) -> f32) {
        let reference =
            candle_core::safetensors::load(fixture("cm_cond.safetensors"), &Device::Cpu).unwrap();
        let names: Vec<&String> = checkpoint.tensors.keys().collect();
        let mut expected: Vec<&String> = reference.keys().collect();
        expected.sort();
        assert_eq!(names, expected);
        for (name, tensor) in &checkpoint.tensors {
            let want = &reference[name];
            assert_eq!(tensor.dims(), want.dims(), "{name}");
            assert_eq!(tensor.dtype(), dtype, "{name}");
            assert!(tensor.is_contiguous(), "{name}");
            for (got, want) in values(tensor).into_iter().zip(values(want)) {
                assert!(
                    (got - want).abs() <= tolerance(want),
                    "{name}: {got} vs {want}"
                );
            }
        }
    }

    /// Exact equality.
    fn exact(_: f32) -> f32 {
        0.0
    }

    #[test]
    fn reads_a_plain_state_dict() {
        let checkpoint = read_pytorch(&fixture("cm_cond.pt")).unwrap();
        assert_eq!(checkpoint.key, None);
        assert_eq!(checkpoint.tensors.len(), 143);
        assert_matches_cm_cond(&checkpoint, DType::F32, exact);
    }

    #[test]
    fn reads_a_nested_checkpoint_and_names_its_key() {
        let checkpoint = read_pytorch(&fixture("cm_cond_nested.pt")).unwrap();
        assert_eq!(checkpoint.key.as_deref(), Some("model"));
        assert_matches_cm_cond(&checkpoint, DType::F32, exact);
    }

    #[test]
    fn reads_views_into_shared_storages_looking_each_up_once() {
        let path = fixture("abcdefghijklmnopqrstu.pt");
        let checkpoint = read_pytorch(&path).unwrap();
        assert_matches_cm_cond(&checkpoint, DType::F32, exact);
        // data.pkl, byteorder, and each of the 2 storages once, for 143 tensors.
        let archive = TorchZip::open(&path).unwrap();
        read_archive(&path, &archive).unwrap();
        assert_eq!(archive.lookups(), 2 + 2);
        // One storage per tensor in the plain file.
        let path = fixture("cm_cond.pt");
        let archive = TorchZip::open(&path).unwrap();
        read_archive(&path, &archive).unwrap();
        assert_eq!(archive.lookups(), 2 + 143);
    }

    #[test]
    fn shapes_come_from_the_pickle_alone() {
        for file in [
            "cm_cond.pt",
            "cm_cond_nested.pt",
            "abcdefghijklmnopqrstu.pt",
        ] {
            let shapes = read_pytorch_shapes(&fixture(file)).unwrap();
            let full = read_pytorch(&fixture(file)).unwrap();
            let want: BTreeMap<String, Vec<usize>> = full
                .tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.dims().to_vec()))
                .collect();
            assert_eq!(shapes, want, "{file}");
        }
        let err = read_pytorch_shapes(&fixture("legacy_format.pt")).unwrap_err();
        assert!(matches!(err, PytorchError::Legacy { .. }), "{err}");
    }

    #[test]
    fn reads_float16_in_float16() {
        let checkpoint = read_pytorch(&fixture("cm_cond_half.pt")).unwrap();
        // Round to nearest: half an f16 ulp (2^-11 relative), or half the smallest subnormal.
        assert_matches_cm_cond(&checkpoint, DType::F16, |want| {
            (want.abs() * 2f32.powi(-11)).max(2f32.powi(-25))
        });
    }

    #[test]
    fn refuses_the_legacy_format_saying_how_to_resave() {
        let path = fixture("legacy_format.pt");
        let error = read_pytorch(&path).unwrap_err();
        assert!(matches!(error, PytorchError::Legacy { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("legacy_format.pt"), "{message}");
        assert!(message.contains("re-save"), "{message}");
        assert!(
            message.contains("torch.save(torch.load('OLD.pt', map_location='cpu'), 'NEW.pt')"),
            "{message}"
        );
    }

    /// A protocol-2 pickle written opcode by opcode, as torch writes state dicts.
    struct Pickle(Vec<u8>);

    impl Pickle {
        fn new() -> Self {
            Pickle(vec![0x80, 2])
        }
        fn op(&mut self, bytes: &[u8]) -> &mut Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.op(b"X")
                .op(&(s.len() as u32).to_le_bytes())
                .op(s.as_bytes())
        }
        fn int(&mut self, i: i32) -> &mut Self {
            self.op(b"J").op(&i.to_le_bytes())
        }
        fn global(&mut self, module: &str, name: &str) -> &mut Self {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
        fn ints(&mut self, values: &[i32]) -> &mut Self {
            self.op(b"(");
            for &v in values {
                self.int(v);
            }
            self.op(b"t")
        }
        /// `_rebuild_tensor_v2((storage, class, key, cpu, numel), offset, shape, stride, False,
        /// OrderedDict())`.
        fn tensor(
            &mut self,
            class: &str,
            key: &str,
            numel: i32,
            offset: i32,
            shape: &[i32],
            stride: &[i32],
        ) -> &mut Self {
            self.global("torch._utils", "_rebuild_tensor_v2").op(b"((");
            self.str("storage")
                .global("torch", class)
                .str(key)
                .str("cpu")
                .int(numel)
                .op(b"tQ");
            self.int(offset).ints(shape).ints(stride).op(&[0x89]);
            self.global("collections", "OrderedDict").op(b")RtR")
        }
        /// A dict from `build`'s key-value pairs.
        fn dict(&mut self, build: impl FnOnce(&mut Self)) -> &mut Self {
            self.op(b"}(");
            build(self);
            self.op(b"u")
        }
        fn finish(&mut self) -> Vec<u8> {
            self.op(b".").0.clone()
        }
    }

    /// Writes a torch-like archive with folder `w` holding `pickle` and f32 storages, plus
    /// `extra` entries, and returns its path (inside `dir`).
    fn archive(
        dir: &tempfile::TempDir,
        pickle: &[u8],
        storages: &[(&str, &[f32])],
        extra: &[(&str, &[u8])],
    ) -> PathBuf {
        let mut entries: Vec<(String, Vec<u8>)> = vec![("w/data.pkl".into(), pickle.to_vec())];
        for (key, values) in storages {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            entries.push((format!("w/data/{key}"), bytes));
        }
        entries.extend(
            extra
                .iter()
                .map(|(name, bytes)| (name.to_string(), bytes.to_vec())),
        );
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let path = dir.path().join("w.pt");
        std::fs::write(
            &path,
            write_zip(
                &refs,
                &Layout {
                    zip64: true,
                    local_extra: 13,
                    ..Layout::default()
                },
            ),
        )
        .unwrap();
        path
    }

    /// 60 floats whose values are their indices.
    fn ramp() -> Vec<f32> {
        (0..60).map(|i| i as f32).collect()
    }

    /// The storage indices a view visits, in row-major order.
    fn view_indices(shape: &[i32], stride: &[i32], offset: i32) -> Vec<f32> {
        let mut out = vec![offset];
        for (&d, &s) in shape.iter().zip(stride) {
            out = out
                .iter()
                .flat_map(|&base| (0..d).map(move |i| base + i * s))
                .collect();
        }
        out.into_iter().map(|i| i as f32).collect()
    }

    #[test]
    fn copies_strided_fortran_offset_and_broadcast_views_in_order() {
        let views: [(&str, &[i32], &[i32], i32); 7] = [
            ("transposed", &[3, 2], &[1, 3], 0),
            ("fortran", &[2, 3, 4], &[1, 2, 6], 0),
            ("strided", &[2, 3], &[20, 3], 5),
            ("broadcast", &[2, 3], &[0, 1], 7),
            ("offset", &[2, 2], &[2, 1], 56),
            ("scalar", &[], &[], 9),
            ("empty", &[0, 3], &[3, 1], 60),
        ];
        let mut pickle = Pickle::new();
        pickle.dict(|p| {
            for (name, shape, stride, offset) in views {
                p.str(name)
                    .tensor("FloatStorage", "0", 60, offset, shape, stride);
            }
            p.str("_metadata").int(1);
        });
        let dir = tempfile::tempdir().unwrap();
        let path = archive(
            &dir,
            &pickle.finish(),
            &[("0", &ramp())],
            &[("w/byteorder", b"little")],
        );
        let checkpoint = read_pytorch(&path).unwrap();
        assert_eq!(
            checkpoint.tensors.len(),
            views.len(),
            "the `_metadata` int is skipped"
        );
        for (name, shape, stride, offset) in views {
            let tensor = &checkpoint.tensors[name];
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            assert_eq!(tensor.dims(), dims.as_slice(), "{name}");
            assert_eq!(
                values(tensor),
                view_indices(shape, stride, offset),
                "{name}"
            );
        }
    }

    /// The error reading a one-tensor archive whose tensor is `tensor`'s record in a storage
    /// of `stored` floats.
    fn one_tensor_error(tensor: impl FnOnce(&mut Pickle), stored: usize) -> String {
        let mut pickle = Pickle::new();
        pickle.dict(|p| {
            p.str("w");
            tensor(p);
        });
        let dir = tempfile::tempdir().unwrap();
        let path = archive(&dir, &pickle.finish(), &[("0", &ramp()[..stored])], &[]);
        read_pytorch(&path).unwrap_err().to_string()
    }

    #[test]
    fn views_and_storages_that_do_not_fit_are_errors() {
        let past_end = one_tensor_error(
            |p| {
                p.tensor("FloatStorage", "0", 60, 58, &[4], &[1]);
            },
            60,
        );
        assert!(
            past_end.contains("tensor `w` (shape [4], strides [1], offset 58) reaches element 61"),
            "{past_end}"
        );
        let short = one_tensor_error(
            |p| {
                p.tensor("FloatStorage", "0", 60, 0, &[4], &[1]);
            },
            30,
        );
        assert!(
            short.contains("a storage of 120 bytes, fewer than the 60 F32 elements"),
            "{short}"
        );
        let missing = one_tensor_error(
            |p| {
                p.tensor("FloatStorage", "9", 60, 0, &[4], &[1]);
            },
            60,
        );
        assert!(
            missing.contains("needs storage `w/data/9`, which the archive lacks"),
            "{missing}"
        );
        let int32 = one_tensor_error(
            |p| {
                p.tensor("IntStorage", "0", 60, 0, &[4], &[1]);
            },
            60,
        );
        assert!(
            int32.contains("unsupported storage type IntStorage (supported: Float"),
            "{int32}"
        );
    }

    #[test]
    fn malformed_tensor_records_are_errors_not_panics() {
        let few_args = |p: &mut Pickle| {
            p.global("torch._utils", "_rebuild_tensor_v2")
                .op(b"(")
                .int(0)
                .op(b"tR");
        };
        let error = one_tensor_error(few_args, 60);
        assert!(
            error.contains("tensor `w` has a malformed `torch._utils._rebuild_tensor_v2` record"),
            "{error}"
        );
        let short_id = |p: &mut Pickle| {
            p.global("torch._utils", "_rebuild_tensor_v2")
                .op(b"((")
                .str("storage")
                .op(b"tQ");
            p.int(0).ints(&[1]).ints(&[1]).op(b"tR");
        };
        assert!(one_tensor_error(short_id, 60).contains("malformed"));
        let from_type = |p: &mut Pickle| {
            p.global("torch._tensor", "_rebuild_from_type_v2")
                .op(b"(")
                .int(0)
                .op(b"tR");
        };
        assert!(one_tensor_error(from_type, 60).contains("malformed"));
        let quantized = |p: &mut Pickle| {
            p.global("torch._utils", "_rebuild_qtensor").op(b")R");
        };
        let error = one_tensor_error(quantized, 60);
        assert!(
            error
                .contains("is stored with `torch._utils._rebuild_qtensor`, which is not supported"),
            "{error}"
        );
    }

    /// A state dict of one 4-float tensor named `name`.
    fn small_state_dict(p: &mut Pickle, name: &str) {
        p.dict(|p| {
            p.str(name).tensor("FloatStorage", "0", 60, 0, &[4], &[1]);
        });
    }

    /// Reads an archive holding `pickle` and the ramp storage.
    fn read(pickle: &[u8]) -> Result<Checkpoint, PytorchError> {
        let dir = tempfile::tempdir().unwrap();
        read_pytorch(&archive(&dir, pickle, &[("0", &ramp())], &[]))
    }

    #[test]
    fn picks_the_state_dict_out_of_a_nested_checkpoint() {
        let mut pickle = Pickle::new();
        pickle.dict(|p| {
            small_state_dict(p.str("ema"), "a");
            small_state_dict(p.str("model"), "b");
            // 2**70, which candle's unpickler cannot take (a shift overflow).
            p.str("seed").op(&[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40]);
            p.str("step").int(3);
        });
        let checkpoint = read(&pickle.finish()).unwrap();
        assert_eq!(
            checkpoint.key.as_deref(),
            Some("model"),
            "model is preferred to ema"
        );
        assert_eq!(checkpoint.tensors.keys().collect::<Vec<_>>(), ["b"]);

        let mut pickle = Pickle::new();
        pickle.dict(|p| {
            p.str("epoch").int(1);
            small_state_dict(p.str("weights"), "a");
        });
        assert_eq!(
            read(&pickle.finish()).unwrap().key.as_deref(),
            Some("weights"),
            "the only dict of tensors"
        );

        let mut pickle = Pickle::new();
        pickle.dict(|p| {
            small_state_dict(p.str("generator"), "a");
            small_state_dict(p.str("critic"), "b");
        });
        let error = read(&pickle.finish()).unwrap_err().to_string();
        assert!(
            error.contains(
                "holds no state dict: 2 entries hold dicts of tensors (critic, generator)"
            ),
            "{error}"
        );

        let mut pickle = Pickle::new();
        pickle.dict(|p| {
            p.str("step").int(3).str("note").str("x");
        });
        let error = read(&pickle.finish()).unwrap_err().to_string();
        assert!(
            error.contains("holds no state dict: no tensors in its top-level dict")
                && error.contains("(note, step)"),
            "{error}"
        );

        let error = read(&Pickle::new().op(b"]").finish())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("its top-level object is a list, not a dict of tensors"),
            "{error}"
        );
    }

    #[test]
    fn strips_the_data_parallel_prefix_only_from_all_names() {
        let mut pickle = Pickle::new();
        pickle.dict(|p| {
            p.str("module.a")
                .tensor("FloatStorage", "0", 60, 0, &[4], &[1]);
            p.str("module.b.c")
                .tensor("FloatStorage", "0", 60, 4, &[4], &[1]);
        });
        let checkpoint = read(&pickle.finish()).unwrap();
        assert_eq!(checkpoint.tensors.keys().collect::<Vec<_>>(), ["a", "b.c"]);

        let mut pickle = Pickle::new();
        pickle.dict(|p| {
            p.str("module.a")
                .tensor("FloatStorage", "0", 60, 0, &[4], &[1]);
            p.str("b").tensor("FloatStorage", "0", 60, 4, &[4], &[1]);
        });
        let checkpoint = read(&pickle.finish()).unwrap();
        assert_eq!(
            checkpoint.tensors.keys().collect::<Vec<_>>(),
            ["b", "module.a"]
        );
    }

    #[test]
    fn pickles_candle_cannot_read_are_errors_not_panics() {
        let mut protocol_4 = vec![0x80, 4, 0x95];
        protocol_4.extend_from_slice(&[0; 8]);
        let error = read(&protocol_4).unwrap_err().to_string();
        let expected = "unsupported pickle opcode 0x95 at byte 2; the file was pickled with a \
                        protocol above 2";
        assert!(error.contains(expected), "{error}");
        let mut pickle = Pickle::new();
        small_state_dict(&mut pickle, "a");
        let whole = pickle.finish();
        for len in 0..whole.len() {
            assert!(read(&whole[..len]).is_err(), "pickle cut to {len} bytes");
        }
        let long_string = [0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff, b'.'];
        assert!(read(&long_string)
            .unwrap_err()
            .to_string()
            .contains("the pickle is cut off"));
        let dict_opcode = [0x80, 2, b'(', b'd', b'.'];
        assert!(read(&dict_opcode)
            .unwrap_err()
            .to_string()
            .contains("unsupported pickle opcode 0x64"));
    }

    #[test]
    fn refuses_files_that_are_not_readable_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.pt");
        std::fs::write(&text, "not a checkpoint").unwrap();
        let error = read_pytorch(&text).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "`{}` is not a PyTorch checkpoint (zip) file",
                text.display()
            )
        );
        assert!(matches!(
            read_pytorch(&dir.path().join("missing.pt")),
            Err(PytorchError::Io { .. })
        ));

        let mut pickle = Pickle::new();
        small_state_dict(&mut pickle, "a");
        let pickle = pickle.finish();
        let script = archive(
            &dir,
            &pickle,
            &[("0", &ramp())],
            &[("w/constants.pkl", b"\x80\x02)."), ("w/code/m.py", b"")],
        );
        let error = read_pytorch(&script).unwrap_err().to_string();
        assert!(
            error.contains(
                "is a TorchScript archive; TorchScript modules are not supported, save the"
            ),
            "{error}"
        );

        let big = archive(&dir, &pickle, &[("0", &ramp())], &[("w/byteorder", b"big")]);
        assert!(matches!(
            read_pytorch(&big),
            Err(PytorchError::BigEndian { .. })
        ));

        let two = archive(&dir, &pickle, &[("0", &ramp())], &[("v/data.pkl", &pickle)]);
        let error = read_pytorch(&two).unwrap_err().to_string();
        assert!(
            error.contains("the archive has 2 data.pkl entries (in w, v)"),
            "{error}"
        );

        let refs: [(&str, &[u8]); 1] = [("w/data.pkl", &pickle)];
        std::fs::write(
            &two,
            write_zip(
                &refs,
                &Layout {
                    method: 8,
                    ..Layout::default()
                },
            ),
        )
        .unwrap();
        let error = read_pytorch(&two).unwrap_err().to_string();
        assert!(
            error.contains("entry `w/data.pkl` is compressed (method 8)"),
            "{error}"
        );

        let mut truncated = std::fs::read(&big).unwrap();
        truncated.truncate(truncated.len() - 30);
        std::fs::write(&two, truncated).unwrap();
        let error = read_pytorch(&two).unwrap_err().to_string();
        assert!(
            error.contains("is not a readable PyTorch checkpoint: not a zip archive"),
            "{error}"
        );
    }
}
