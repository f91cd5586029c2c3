//! A pickle *reader* for the subset of the format a PyTorch state_dict uses, that executes
//! nothing. Python's unpickler imports and calls whatever a `GLOBAL` names; this one resolves a
//! `GLOBAL` only against a short allowlist ([`Global`]) into inert values, and `REDUCE`
//! (a call) only builds what those few callables would: an empty `OrderedDict`, a tensor view of
//! a storage. Anything else — `os.system`, `builtins.eval`, a pickled `nn.Module` class — is an
//! error naming it, raised before any later opcode is read.
//!
//! Opcodes: <https://github.com/python/cpython/blob/main/Lib/pickletools.py>. Protocols 2 to 5
//! are read (torch writes 2); the opcodes that only protocol 0/1 text pickles or out-of-band
//! buffers use are refused by name.
//!
//! Bounds: every opcode consumes at least one byte, so the work is linear in the pickle's length;
//! the stack, the mark stack and the memo are capped ([`MAX_STACK`], [`MAX_MEMO`]), strings are
//! slices of the input checked against its length, and dicts and lists live in an arena owned by
//! the reader (no reference counting, so a dict that contains itself is not a leak).

use std::collections::HashMap;
use std::rc::Rc;

/// Deepest stack (and mark stack) a pickle may build; torch's state_dicts need a few dozen.
pub const MAX_STACK: usize = 1 << 16;
/// Most memo entries; a state_dict memoizes a handful per tensor.
pub const MAX_MEMO: usize = 1 << 22;
/// Deepest nesting of tuples; torch's tensors need 2 (the arguments, the size in them).
pub const MAX_TUPLE_DEPTH: u32 = 64;

/// A tuple of `items`, unless that nests tuples beyond [`MAX_TUPLE_DEPTH`].
fn tuple(items: Vec<Value>) -> Result<Value, String> {
    let depth = 1 + items.iter().map(|v| if let Value::Tuple(_, d) = v { *d } else { 0 }).max().unwrap_or(0);
    if depth > MAX_TUPLE_DEPTH {
        return Err(format!("tuples nested more than {MAX_TUPLE_DEPTH} deep"));
    }
    Ok(Value::Tuple(Rc::from(items), depth))
}

/// The callables and classes a state_dict pickle may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: called with no arguments, an empty dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`: the tensor.
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(tensor, requires_grad, hooks, state)`: the tensor.
    RebuildParameterWithState,
    /// `torch._utils._rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])`:
    /// what torch writes for the dtypes without a typed storage class (uint16/32/64).
    RebuildTensorV3,
    /// `torch.<X>Storage`, named in a storage's persistent id.
    Storage(StorageDtype),
    /// `torch.storage.UntypedStorage`: a storage of bytes, its dtype given by `_rebuild_tensor_v3`.
    UntypedStorage,
    /// `torch.<dtype>` (`torch.uint16`, ...), the dtype argument of `_rebuild_tensor_v3`.
    Dtype(StorageDtype),
}

/// The element type of a `torch.<X>Storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    U16,
    U32,
    U64,
}

impl StorageDtype {
    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            StorageDtype::F64 | StorageDtype::I64 | StorageDtype::U64 => 8,
            StorageDtype::F32 | StorageDtype::I32 | StorageDtype::U32 => 4,
            StorageDtype::F16 | StorageDtype::BF16 | StorageDtype::I16 | StorageDtype::U16 => 2,
            StorageDtype::I8 | StorageDtype::U8 | StorageDtype::Bool => 1,
        }
    }

    fn from_class(name: &str) -> Option<StorageDtype> {
        Some(match name {
            "FloatStorage" => StorageDtype::F32,
            "HalfStorage" => StorageDtype::F16,
            "BFloat16Storage" => StorageDtype::BF16,
            "DoubleStorage" => StorageDtype::F64,
            "LongStorage" => StorageDtype::I64,
            "IntStorage" => StorageDtype::I32,
            "ShortStorage" => StorageDtype::I16,
            "CharStorage" => StorageDtype::I8,
            "ByteStorage" => StorageDtype::U8,
            "BoolStorage" => StorageDtype::Bool,
            _ => return None,
        })
    }

    /// The dtype `torch.<name>` names (`torch.float32`, `torch.float`, `torch.uint16`, ...).
    fn from_dtype(name: &str) -> Option<StorageDtype> {
        Some(match name {
            "float32" | "float" => StorageDtype::F32,
            "float16" | "half" => StorageDtype::F16,
            "bfloat16" => StorageDtype::BF16,
            "float64" | "double" => StorageDtype::F64,
            "int64" | "long" => StorageDtype::I64,
            "int32" | "int" => StorageDtype::I32,
            "int16" | "short" => StorageDtype::I16,
            "int8" => StorageDtype::I8,
            "uint8" => StorageDtype::U8,
            "bool" => StorageDtype::Bool,
            "uint16" => StorageDtype::U16,
            "uint32" => StorageDtype::U32,
            "uint64" => StorageDtype::U64,
            _ => return None,
        })
    }
}

/// A storage a tensor views: the zip entry `<archive>/data/<key>`, of `dtype` (`None` for an
/// `UntypedStorage`, whose tensor names the dtype).
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    pub key: Rc<str>,
    pub dtype: Option<StorageDtype>,
}

/// The storage a tensor reads, with its element type resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedStorage {
    pub key: Rc<str>,
    pub dtype: StorageDtype,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view into a storage (all in elements).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: TypedStorage,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A value on the unpickler's stack. Dicts and lists are indices into the reader's arena, so
/// copies share them as Python's references do.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// The items, and how deeply tuples nest in it (1 for a tuple of no tuples), bounded by
    /// [`MAX_TUPLE_DEPTH`] so that dropping one never recurses deeply.
    Tuple(Rc<[Value]>, u32),
    Dict(usize),
    List(usize),
    Global(Global),
    Storage(Storage),
    Tensor(Rc<TensorRef>),
}

/// A dict key: torch's state_dicts use strings, optimizer state_dicts integers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Str(Rc<str>),
    Int(i64),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Str(s) => f.write_str(s),
            Key::Int(i) => write!(f, "{i}"),
        }
    }
}

/// A dict in insertion order (as `OrderedDict` and Python's `dict` keep it); a key set twice keeps
/// its first position and its last value.
#[derive(Debug, Default)]
pub struct Dict {
    pub entries: Vec<(Key, Value)>,
    index: HashMap<Key, usize>,
}

/// The containers a pickle built.
#[derive(Debug, Default)]
pub struct Arena {
    pub dicts: Vec<Dict>,
    pub lists: Vec<Vec<Value>>,
}

impl Arena {
    fn new_dict(&mut self) -> Value {
        self.dicts.push(Dict::default());
        Value::Dict(self.dicts.len() - 1)
    }

    fn dict_set(&mut self, d: usize, k: Value, v: Value) -> Result<(), String> {
        let key = match k {
            Value::Str(s) => Key::Str(s),
            Value::Int(i) => Key::Int(i),
            Value::Bool(b) => Key::Int(i64::from(b)),
            other => return Err(format!("a dict key that is {}, not a string or integer", kind(&other))),
        };
        let dict = &mut self.dicts[d];
        match dict.index.get(&key) {
            Some(&i) => dict.entries[i].1 = v,
            None => {
                dict.index.insert(key.clone(), dict.entries.len());
                dict.entries.push((key, v));
            }
        }
        Ok(())
    }
}

/// The result of reading a pickle: the value `STOP` returned, and the containers it refers to.
#[derive(Debug)]
pub struct Unpickled {
    pub value: Value,
    pub arena: Arena,
}

/// What a refused `GLOBAL` says: the name, and for a `torch.nn` class the hint to save a state_dict.
fn refuse_global(module: &str, name: &str) -> String {
    if module.starts_with("torch.nn") || module == "__main__" {
        format!(
            "the pickle holds a whole Python object ({module}.{name}), not a state_dict of tensors: save the weights with \
             torch.save(model.state_dict(), path) and load that"
        )
    } else {
        format!(
            "the pickle calls {module}.{name}, which a state_dict never does; headswap reads tensors only and runs no pickled \
             code (allowed: collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter, torch.*Storage)"
        )
    }
}

fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
        ("torch.storage", "UntypedStorage") | ("torch", "UntypedStorage") => Global::UntypedStorage,
        ("torch", n) => match (StorageDtype::from_class(n), StorageDtype::from_dtype(n)) {
            (Some(d), _) => Global::Storage(d),
            (_, Some(d)) => Global::Dtype(d),
            // the storage classes and dtypes torch has beyond those read
            _ if n.ends_with("Storage")
                || ["complex", "cfloat", "cdouble", "chalf", "float8", "float4", "qint", "quint", "bits", "int", "uint"]
                    .iter()
                    .any(|p| n.starts_with(p)) =>
            {
                return Err(format!(
                    "a tensor of type torch.{n}, which headswap does not read (it reads float32, float16, bfloat16, float64, \
                     int64, int32, int16, int8, uint8, uint16, uint32, uint64 and bool tensors)"
                ));
            }
            _ => return Err(refuse_global(module, name)),
        },
        _ => return Err(refuse_global(module, name)),
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("the pickle ends inside an opcode's argument at byte {} (needs {n} more bytes)", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| "short read")?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "short read")?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "short read")?))
    }
    /// A length that must fit in what is left of the input.
    fn len(&mut self, n: u64) -> Result<usize, String> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.b.len() - self.at)
            .ok_or_else(|| format!("an argument of {n} bytes at byte {} runs past the end of the pickle", self.at))
    }
    fn str(&mut self, n: u64) -> Result<Rc<str>, String> {
        let n = self.len(n)?;
        let s = self.take(n)?;
        std::str::from_utf8(s).map(Rc::from).map_err(|_| format!("a string at byte {} is not UTF-8", self.at - n))
    }
    /// A protocol-0 text line (the `GLOBAL` opcode's module and name), without its newline.
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.b[self.at..];
        let n = rest.iter().position(|&c| c == b'\n').ok_or("a GLOBAL name without a newline")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "a GLOBAL name that is not UTF-8")?;
        self.at += n + 1;
        Ok(s)
    }
}

/// Reads the pickle `b` and returns the value its `STOP` returns. Errors are plain messages.
pub fn unpickle(b: &[u8]) -> Result<Unpickled, String> {
    let mut r = Reader { b, at: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut arena = Arena::default();

    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(|| format!("opcode at byte {} pops an empty stack", r.at))?
        };
    }
    // The items pushed since the last MARK, and the mark removed.
    macro_rules! pop_mark {
        () => {{
            let m = marks.pop().ok_or_else(|| format!("opcode at byte {} needs a MARK and there is none", r.at))?;
            if m > stack.len() {
                return Err(format!("opcode at byte {}: the MARK lies above the stack", r.at));
            }
            stack.split_off(m)
        }};
    }
    macro_rules! top {
        () => {
            stack.last_mut().ok_or_else(|| format!("opcode at byte {} needs a value on the stack", r.at))?
        };
    }
    macro_rules! memo_put {
        ($k:expr) => {{
            let v = stack.last().ok_or_else(|| format!("memoizing at byte {} with an empty stack", r.at))?.clone();
            if memo.len() >= MAX_MEMO && !memo.contains_key(&$k) {
                return Err(format!("the pickle memoizes more than {MAX_MEMO} values"));
            }
            memo.insert($k, v);
        }};
    }
    macro_rules! memo_get {
        ($k:expr) => {{
            let k = $k;
            let v = memo.get(&k).ok_or_else(|| format!("opcode at byte {} reads memo entry {k}, which was never set", r.at))?.clone();
            stack.push(v);
        }};
    }

    loop {
        if stack.len() > MAX_STACK || marks.len() > MAX_STACK {
            return Err(format!("the pickle's stack grows beyond {MAX_STACK} values"));
        }
        let at = r.at;
        let op = r.u8().map_err(|_| "the pickle ends without a STOP opcode".to_string())?;
        match op {
            0x80 => {
                // PROTO
                let p = r.u8()?;
                if !(2..=5).contains(&p) {
                    return Err(format!("pickle protocol {p}; torch.save writes protocol 2"));
                }
            }
            0x95 => {
                // FRAME: a length hint only
                r.u64()?;
            }
            b'.' => {
                // STOP
                let value = pop!();
                return Ok(Unpickled { value, arena });
            }
            b'(' => marks.push(stack.len()),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(i64::from(r.u32()? as i32))),
            b'K' => stack.push(Value::Int(i64::from(r.u8()?))),
            b'M' => stack.push(Value::Int(i64::from(r.u16()?))),
            0x8a => {
                // LONG1: a little-endian two's-complement integer of n bytes
                let n = usize::from(r.u8()?);
                let bytes = r.take(n)?;
                stack.push(Value::Int(
                    long_from_bytes(bytes).ok_or_else(|| format!("an integer of {n} bytes at byte {at} does not fit 64 bits"))?,
                ));
            }
            0x8b => return Err(format!("LONG4 at byte {at}: integers beyond 64 bits are not tensor data")),
            b'G' => stack.push(Value::Float(f64::from_be_bytes(r.take(8)?.try_into().map_err(|_| "short read")?))),
            b'X' => {
                let n = r.u32()?;
                stack.push(Value::Str(r.str(u64::from(n))?));
            }
            0x8c => {
                let n = r.u8()?;
                stack.push(Value::Str(r.str(u64::from(n))?));
            }
            0x8d => {
                let n = r.u64()?;
                stack.push(Value::Str(r.str(n)?));
            }
            b'C' | b'B' | 0x8e | 0x96 => {
                // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                let n = match op {
                    b'C' => u64::from(r.u8()?),
                    b'B' => u64::from(r.u32()?),
                    _ => r.u64()?,
                };
                let n = r.len(n)?;
                stack.push(Value::Bytes(Rc::from(r.take(n)?)));
            }
            b')' => stack.push(tuple(Vec::new())?),
            b't' => {
                let items = pop_mark!();
                stack.push(tuple(items).map_err(|e| format!("opcode at byte {at}: {e}"))?);
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err(format!("TUPLE{n} at byte {at} with {} values on the stack", stack.len()));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(tuple(items).map_err(|e| format!("opcode at byte {at}: {e}"))?);
            }
            b'}' => {
                let d = arena.new_dict();
                stack.push(d);
            }
            b'd' => {
                let items = pop_mark!();
                let d = arena.new_dict();
                if let Value::Dict(i) = d {
                    set_items(&mut arena, i, items).map_err(|e| format!("DICT at byte {at}: {e}"))?;
                }
                stack.push(d);
            }
            b']' => {
                arena.lists.push(Vec::new());
                stack.push(Value::List(arena.lists.len() - 1));
            }
            b'l' => {
                let items = pop_mark!();
                arena.lists.push(items);
                stack.push(Value::List(arena.lists.len() - 1));
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                match top!() {
                    Value::Dict(d) => {
                        let d = *d;
                        arena.dict_set(d, k, v).map_err(|e| format!("SETITEM at byte {at}: {e}"))?;
                    }
                    other => return Err(format!("SETITEM at byte {at} on {}", kind(other))),
                }
            }
            b'u' => {
                let items = pop_mark!();
                match top!() {
                    Value::Dict(d) => {
                        let d = *d;
                        set_items(&mut arena, d, items).map_err(|e| format!("SETITEMS at byte {at}: {e}"))?;
                    }
                    other => return Err(format!("SETITEMS at byte {at} on {}", kind(other))),
                }
            }
            b'a' => {
                let v = pop!();
                match top!() {
                    Value::List(l) => arena.lists[*l].push(v),
                    other => return Err(format!("APPEND at byte {at} on {}", kind(other))),
                }
            }
            b'e' => {
                let items = pop_mark!();
                match top!() {
                    Value::List(l) => arena.lists[*l].extend(items),
                    other => return Err(format!("APPENDS at byte {at} on {}", kind(other))),
                }
            }
            b'q' => {
                let k = u32::from(r.u8()?);
                memo_put!(k)
            }
            b'r' => {
                let k = r.u32()?;
                memo_put!(k)
            }
            0x94 => {
                // MEMOIZE: the next free index
                let k = u32::try_from(memo.len()).map_err(|_| "memo overflow")?;
                memo_put!(k)
            }
            b'h' => memo_get!(u32::from(r.u8()?)),
            b'j' => memo_get!(r.u32()?),
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Value::Global(resolve_global(module, name)?));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop!();
                let module = pop!();
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(resolve_global(&m, &n)?)),
                    _ => return Err(format!("STACK_GLOBAL at byte {at} without two strings")),
                }
            }
            b'Q' => {
                let pid = pop!();
                stack.push(persistent_load(&pid).map_err(|e| format!("BINPERSID at byte {at}: {e}"))?);
            }
            b'R' => {
                let args = pop!();
                let f = pop!();
                let Value::Tuple(args, _) = args else {
                    return Err(format!("REDUCE at byte {at} with arguments that are not a tuple"));
                };
                let v = reduce(&mut arena, &f, &args).map_err(|e| format!("REDUCE at byte {at}: {e}"))?;
                stack.push(v);
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args); no allowed class is built this way
                let _args = pop!();
                let cls = pop!();
                return Err(format!("NEWOBJ at byte {at} builds an object of {}, which a state_dict does not hold", kind(&cls)));
            }
            b'b' => {
                // BUILD: obj.__setstate__(state). An OrderedDict gets attributes (torch's
                // `_metadata`, module versions), which are not tensors and are dropped; a tensor
                // from `_rebuild_parameter_with_state` likewise.
                let state = pop!();
                match top!() {
                    Value::Dict(_) | Value::Tensor(_) => {}
                    other => return Err(format!("BUILD at byte {at} on {}", kind(other))),
                }
                drop(state);
            }
            b'0' => {
                pop!();
            }
            b'2' => {
                let v = top!().clone();
                stack.push(v);
            }
            b'1' => {
                // POP_MARK
                drop(pop_mark!());
            }
            _ => {
                return Err(format!(
                    "opcode {} at byte {at}{}",
                    if op.is_ascii_graphic() { format!("{:?} (0x{op:02x})", op as char) } else { format!("0x{op:02x}") },
                    match op {
                        b'i' | b'o' => ": it builds an arbitrary object, which a state_dict does not hold",
                        b'P' | b'I' | b'L' | b'F' | b'S' | b'V' | b'T' | b'U' | b'p' | b'g' => {
                            ": a protocol 0/1 text opcode, which torch.save does not write"
                        }
                        _ => " is not one headswap reads",
                    }
                ));
            }
        }
    }
}

fn set_items(arena: &mut Arena, d: usize, items: Vec<Value>) -> Result<(), String> {
    if !items.len().is_multiple_of(2) {
        return Err(format!("an odd number of values ({}) for key–value pairs", items.len()));
    }
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        arena.dict_set(d, k, v)?;
    }
    Ok(())
}

/// A little-endian two's-complement integer (pickle's LONG1), if it fits an `i64`.
fn long_from_bytes(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return Some(0);
    }
    let negative = b[b.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    // Bytes beyond the eighth must be pure sign extension.
    if b.len() > 8 && b[8..].iter().any(|&x| x != fill) {
        return None;
    }
    let mut w = [fill; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    let v = i64::from_le_bytes(w);
    // Eight bytes whose sign differs from the (sign-extended) rest do not fit.
    if b.len() > 8 && (v < 0) != negative {
        return None;
    }
    Some(v)
}

/// A short description of a value for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Tuple(..) => "a tuple",
        Value::Dict(_) => "a dict",
        Value::List(_) => "a list",
        Value::Global(_) => "a class or function",
        Value::Storage(_) => "a storage",
        Value::Tensor(_) => "a tensor",
    }
}

/// torch's persistent ids: `('storage', torch.<X>Storage, key, location, numel)`.
fn persistent_load(pid: &Value) -> Result<Value, String> {
    let Value::Tuple(t, _) = pid else { return Err(format!("a persistent id that is {}, not a tuple", kind(pid))) };
    match &t[..] {
        [Value::Str(tag), Value::Global(g @ (Global::Storage(_) | Global::UntypedStorage)), key, _location, Value::Int(_numel)]
            if &**tag == "storage" =>
        {
            let dtype = match g {
                Global::Storage(d) => Some(*d),
                _ => None,
            };
            let key: Rc<str> = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => Rc::from(i.to_string()),
                other => return Err(format!("a storage key that is {}", kind(other))),
            };
            Ok(Value::Storage(Storage { key, dtype }))
        }
        _ => Err("a persistent id that is not ('storage', torch.<X>Storage, key, location, numel)".into()),
    }
}

/// A non-negative integer argument, or an error naming `what`.
fn index(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} is {i}, negative")),
        other => Err(format!("{what} is {}, not an integer", kind(other))),
    }
}

fn indices(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(t, _) => t.iter().map(|x| index(x, what)).collect(),
        other => Err(format!("{what} is {}, not a tuple", kind(other))),
    }
}

/// What calling one of the allowed callables returns.
fn reduce(arena: &mut Arena, f: &Value, args: &[Value]) -> Result<Value, String> {
    match f {
        Value::Global(Global::OrderedDict) => {
            if !args.is_empty() {
                return Err("OrderedDict called with arguments".into());
            }
            Ok(arena.new_dict())
        }
        Value::Global(g @ (Global::RebuildTensorV2 | Global::RebuildTensorV3)) => {
            let v3 = *g == Global::RebuildTensorV3;
            let (f, counts) = if v3 { ("_rebuild_tensor_v3", 7..=8) } else { ("_rebuild_tensor_v2", 6..=7) };
            let [storage, offset, size, stride, ..] = args else {
                return Err(format!("{f} called with {} arguments", args.len()));
            };
            if !counts.contains(&args.len()) {
                return Err(format!("{f} called with {} arguments", args.len()));
            }
            let Value::Storage(storage) = storage else {
                return Err(format!("{f}'s storage is {}", kind(storage)));
            };
            // v2 takes the dtype from the storage's class; v3 from its argument, which a typed
            // storage must agree with
            let dtype = match (v3, storage.dtype, &args[6..]) {
                (false, Some(d), _) => d,
                (true, s, [Value::Global(Global::Dtype(d)), ..]) if s.is_none() || s == Some(*d) => *d,
                _ => return Err(format!("{f} with a storage and dtype that do not go together")),
            };
            let storage = TypedStorage { key: storage.key.clone(), dtype };
            let offset = index(offset, "a tensor's storage offset")?;
            let size = indices(size, "a tensor's size")?;
            let stride = indices(stride, "a tensor's stride")?;
            if size.len() != stride.len() {
                return Err(format!("a tensor with size {size:?} and stride {stride:?}: different lengths"));
            }
            Ok(Value::Tensor(Rc::new(TensorRef { storage, offset, size, stride })))
        }
        Value::Global(Global::RebuildParameter) | Value::Global(Global::RebuildParameterWithState) => match args.first() {
            Some(t @ Value::Tensor(_)) if (3..=4).contains(&args.len()) => Ok(t.clone()),
            _ => Err("_rebuild_parameter called without a tensor".into()),
        },
        Value::Global(Global::Storage(_) | Global::UntypedStorage | Global::Dtype(_)) => {
            Err("a storage class or dtype called directly".into())
        }
        other => Err(format!("calling {}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long1_fits_64_bits_or_is_refused() {
        assert_eq!(long_from_bytes(&[]), Some(0));
        assert_eq!(long_from_bytes(&[0xff]), Some(-1));
        assert_eq!(long_from_bytes(&[0x80, 0x00]), Some(128));
        assert_eq!(long_from_bytes(&[0, 0, 0, 0, 0, 0, 0, 0x80]), Some(i64::MIN));
        assert_eq!(long_from_bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]), None); // 2^64 - 1
        assert_eq!(long_from_bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00]), Some(i64::MAX));
        assert_eq!(long_from_bytes(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]), Some(i64::MIN));
        assert_eq!(long_from_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn refuses_code_before_reading_further() {
        // cos\nsystem\n then garbage: the GLOBAL itself is the error.
        let e = unpickle(b"\x80\x02cos\nsystem\n\xff\xff").unwrap_err();
        assert!(e.contains("os.system") && e.contains("runs no pickled code"), "{e}");
        let e = unpickle(b"\x80\x02ctorch.nn.modules.linear\nLinear\n)\x81.").unwrap_err();
        assert!(e.contains("torch.save(model.state_dict()"), "{e}");
        let e = unpickle(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.").unwrap_err();
        assert!(e.contains("builtins.eval"), "{e}");
    }

    #[test]
    fn other_dtypes_are_named() {
        let e = unpickle(b"\x80\x02ctorch\nComplexFloatStorage\n.").unwrap_err();
        assert!(e.contains("tensor of type torch.ComplexFloatStorage"), "{e}");
        let e = unpickle(b"\x80\x02ctorch\nfloat8_e4m3fn\n.").unwrap_err();
        assert!(e.contains("tensor of type torch.float8_e4m3fn"), "{e}");
        let e = unpickle(b"\x80\x02ctorch\nload\n.").unwrap_err();
        assert!(e.contains("calls torch.load"), "{e}");
    }

    #[test]
    fn a_dict_that_contains_itself_is_no_leak_or_hang() {
        // d = {}; d['d'] = d
        let u = unpickle(b"\x80\x02}q\x00X\x01\x00\x00\x00dh\x00s.").unwrap();
        let Value::Dict(d) = u.value else { panic!() };
        assert_eq!(u.arena.dicts[d].entries[0].1, Value::Dict(d));
    }

    #[test]
    fn deeply_nested_tuples_are_refused_before_dropping_them_could_overflow_the_stack() {
        let mut p = b"\x80\x02)".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 200_000)); // TUPLE1, 200,000 times
        p.push(b'.');
        let e = unpickle(&p).unwrap_err();
        assert!(e.contains("nested more than 64 deep"), "{e}");
        p.truncate(3 + 63);
        p.push(b'.');
        assert!(unpickle(&p).is_ok());
    }

    #[test]
    fn memo_and_stack_errors_are_messages() {
        for bad in
            [&b"\x80\x02h\x05."[..], b"\x80\x02.", b"\x80\x02t.", b"\x80\x02(u.", b"\x80\x02X\xff\xff\xff\xff", b"\x80\x02", b"\x80\x01N."]
        {
            assert!(unpickle(bad).is_err(), "{bad:?}");
        }
    }
}
