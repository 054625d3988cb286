//! PyTorch checkpoints (`torch.save`, torch >= 1.6): a state dict read into named CPU tensors.
//!
//! The file is a zip archive ([`super::torch_zip`]) holding `<folder>/data.pkl`, the pickled
//! object, and one raw storage per `<folder>/data/<key>`. The pickle is read with candle's
//! unpickler; each tensor in it names a storage, an offset, a shape and strides (elements).
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
         python -c \"import torch; torch.save(torch.load('OLD.pt', map_location='cpu'), 'NEW.pt')\" \
         or convert it to safetensors",
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
         (re-save it on a little-endian machine or convert it to safetensors)",
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

/// The message for an opcode candle's unpickler does not know.
fn unpickle_hint(protocol: u8) -> &'static str {
    if protocol > 2 {
        "; the file was pickled with a protocol above 2: re-save it with torch.save's default \
         (no pickle_protocol argument)"
    } else {
        ""
    }
}

/// The message for an unsupported opcode `op` at byte `pos` of a pickle of `protocol`.
fn unsupported_opcode(op: u8, pos: usize, protocol: u8) -> String {
    let hint = unpickle_hint(protocol);
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
        return "the pickle does not have the structure of a torch tensor record".to_owned();
    }
    match line.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// The state dict's items and the top-level key that held it, if any.
fn state_dict(
    path: &Path,
    object: Object,
) -> Result<(Vec<(Object, Object)>, Option<String>), PytorchError> {
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
    let holds_tensors = |value: &Object| matches!(value, Object::Dict(sub) if sub.iter().any(|(_, v)| is_tensor(v)));
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
            let keys: Vec<String> = several.iter().map(|&i| describe_key(&items[i].0)).collect();
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

/// The message for a top-level dict with no tensors in it or in its values.
fn no_tensors_found(items: &[(Object, Object)]) -> String {
    const SHOWN: usize = 20;
    if items.is_empty() {
        return "its top-level object is an empty dict".to_owned();
    }
    let mut keys: Vec<String> = items
        .iter()
        .take(SHOWN)
        .map(|(k, _)| describe_key(k))
        .collect();
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
fn tensor_infos(
    path: &Path,
    items: Vec<(Object, Object)>,
    folder: &str,
) -> Result<Vec<TensorInfo>, PytorchError> {
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
                    .map_err(|e| error(e.to_string()))?
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
            "(shape {dims:?}, strides {strides:?}, offset {offset}) reaches element {last} of a storage of {storage_len}"
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
fn strip_data_parallel(tensors: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
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
mod scratch {
    use super::*;
    #[test]
    fn scratch_tmp_files() {
        let mut names: Vec<_> = std::fs::read_dir("/tmp/ptw")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pt"))
            .collect();
        names.sort();
        for p in names {
            match read_pytorch(&p) {
                Ok(c) => {
                    println!(
                        "{}: OK key={:?} {} tensors",
                        p.display(),
                        c.key,
                        c.tensors.len()
                    );
                    let st = p.with_extension("safetensors");
                    let reference = if st.exists() {
                        Some(candle_core::safetensors::load(&st, &Device::Cpu).unwrap())
                    } else {
                        None
                    };
                    for (k, t) in &c.tensors {
                        let same = reference.as_ref().map(|r| {
                            let r = &r[k];
                            r.dims() == t.dims()
                                && r.dtype() == t.dtype()
                                && r.flatten_all()
                                    .unwrap()
                                    .to_dtype(candle_core::DType::F64)
                                    .unwrap()
                                    .to_vec1::<f64>()
                                    .unwrap()
                                    == t.flatten_all()
                                        .unwrap()
                                        .to_dtype(candle_core::DType::F64)
                                        .unwrap()
                                        .to_vec1::<f64>()
                                        .unwrap()
                        });
                        println!("   {k} {:?} {:?} same={same:?}", t.dims(), t.dtype());
                    }
                }
                Err(e) => println!("{}: ERR {e}", p.display()),
            }
        }
    }
}
