//! A reader of the Python pickles that hold datasets on disk: dicts of lists, strings, numbers and
//! numpy arrays, as in torchvision's CIFAR folders (`cifar-10-batches-py/`, `cifar-100-python/`).
//!
//! Why not a crate: `serde-pickle` resolves no numpy globals, and `pytorch-reader` (used for `.pth`)
//! keeps numpy arrays opaque and its pickle machine private. This machine runs the binary opcodes of
//! protocols 2 to 5 and builds what those files need:
//! - Python 2 `str` (SHORT_BINSTRING / BINSTRING: the original CIFAR files, written by cPickle) and
//!   Python 3 `bytes`, `bytearray` (protocol 5) and `_codecs.encode(s, "latin1")` (bytes at protocol 2
//!   under Python 3) as bytes; unicode strings; ints, floats, bools, None; tuples, lists, dicts; the
//!   memo.
//! - numpy arrays pickled by `numpy.core.multiarray._reconstruct` + BUILD (protocols 2 to 4, numpy 1
//!   and 2 module names) or `numpy.core.numeric._frombuffer` (protocol 5), of numeric dtypes.
//!
//! Anything else (another class, a text-protocol opcode) is an error naming the byte offset. Every
//! length read from the file is checked against the bytes left before anything is allocated, so a
//! file can never make the reader allocate more than about its own size; containers are dismantled
//! iteratively, so deeply nested input cannot overflow the stack when dropped.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use super::DataError;

mod objects;

use objects::{build, reduce};
pub use objects::{Array, Dtype};

/// A value of the pickle. Lists and dicts are shared (the memo refers to the object the stack holds,
/// as in Python) and mutable through APPEND / SETITEM.
#[derive(Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Python 2 `str`, `bytes`, `bytearray`.
    Bytes(Rc<Vec<u8>>),
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A class or function named by GLOBAL / STACK_GLOBAL.
    Global(Rc<(String, String)>),
    Dtype(Rc<RefCell<Dtype>>),
    /// `_reconstruct(ndarray, …)` before its BUILD, then the array.
    Array(Rc<RefCell<Option<Array>>>),
}

impl Clone for Value {
    fn clone(&self) -> Self {
        match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(x) => Value::Float(*x),
            Value::Bytes(b) => Value::Bytes(b.clone()),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Tuple(t) => Value::Tuple(t.clone()),
            Value::List(l) => Value::List(l.clone()),
            Value::Dict(d) => Value::Dict(d.clone()),
            Value::Global(g) => Value::Global(g.clone()),
            Value::Dtype(d) => Value::Dtype(d.clone()),
            Value::Array(a) => Value::Array(a.clone()),
        }
    }
}

impl Drop for Value {
    /// Dismantles nested containers with a work list instead of recursion.
    fn drop(&mut self) {
        fn take(v: &mut Value, work: &mut Vec<Value>) {
            match v {
                Value::Tuple(t) => {
                    if let Some(items) = Rc::get_mut(t) {
                        work.append(items);
                    }
                }
                Value::List(l) => {
                    if let Some(items) = Rc::get_mut(l) {
                        work.append(items.get_mut());
                    }
                }
                Value::Dict(d) => {
                    if let Some(items) = Rc::get_mut(d) {
                        for (k, v) in items.get_mut().drain(..) {
                            work.push(k);
                            work.push(v);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut work = Vec::new();
        take(self, &mut work);
        while let Some(mut v) = work.pop() {
            take(&mut v, &mut work);
        }
    }
}

impl Value {
    /// The Python type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class",
            Value::Dtype(_) => "numpy.dtype",
            Value::Array(_) => "numpy.ndarray",
        }
    }

    /// Text of a `str`, or of `bytes` read as Latin-1 (what torchvision's `pickle.load(…,
    /// encoding="latin1")` does with Python 2 strings).
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Bytes(b) => Some(b.iter().map(|&c| c as char).collect()),
            _ => None,
        }
    }

    /// The items of a list or tuple.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::List(l) => Some(l.borrow().clone()),
            Value::Tuple(t) => Some(t.to_vec()),
            _ => None,
        }
    }

    /// The value of `key` (a `str` or Python 2 `str`) in a dict.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d.borrow().iter().find(|(k, _)| k.text().as_deref() == Some(key)).map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// The keys of a dict that are strings.
    pub fn keys(&self) -> Vec<String> {
        match self {
            Value::Dict(d) => d.borrow().iter().filter_map(|(k, _)| k.text()).collect(),
            _ => vec![],
        }
    }
}

/// An error at a byte offset of the pickle.
pub(super) struct At(pub(super) usize, pub(super) String, pub(super) String);

pub(super) type R<T> = Result<T, At>;

pub(super) fn err<T>(at: usize, expected: impl Into<String>, found: impl Into<String>) -> R<T> {
    Err(At(at, expected.into(), found.into()))
}

/// Most marks open at once (nesting of containers built from a mark).
const MAX_MARKS: usize = 1 << 12;

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize, what: &str) -> R<&'a [u8]> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return err(self.pos, format!("{n} bytes of {what}"), format!("{left} bytes left (truncated file?)"));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize, what: &str) -> R<u64> {
        let b = self.take(n, what)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    /// A length of `n` little-endian bytes, checked against the bytes left.
    fn len(&mut self, n: usize, what: &str) -> R<usize> {
        let at = self.pos;
        let l = self.uint(n, what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if l > left {
            return err(at, format!("a length of {what} within the {left} bytes left"), format!("{l}"));
        }
        Ok(l as usize)
    }

    fn line(&mut self, what: &str) -> R<String> {
        let rest = &self.bytes[self.pos..];
        let Some(end) = rest.iter().position(|&c| c == b'\n') else {
            return err(self.pos, format!("{what} ending in a newline"), "end of file");
        };
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    fn pop(&mut self, at: usize) -> R<Value> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => err(at, "a value on the stack", "an empty stack"),
        }
    }

    fn top(&mut self, at: usize) -> R<&Value> {
        match self.stack.last() {
            Some(v) => Ok(v),
            None => err(at, "a value on the stack", "an empty stack"),
        }
    }

    /// The values above the last mark, and the mark removed.
    fn pop_mark(&mut self, at: usize) -> R<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return err(at, "a MARK before this opcode", "none");
        };
        if m > self.stack.len() {
            return err(at, "the values pushed since the last MARK", "a stack shorter than at the MARK");
        }
        Ok(self.stack.split_off(m))
    }

    /// Each push reads at least one byte, so the stack cannot outgrow the file (nor can the memo).
    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn memo_put(&mut self, at: usize, key: u32) -> R<()> {
        let v = self.top(at)?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, at: usize, key: u32) -> R<()> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => err(at, "a memo key stored before", format!("key {key}")),
        }
    }

    fn run(&mut self) -> R<Value> {
        loop {
            let at = self.pos;
            let op = self.take(1, "an opcode")?[0];
            match op {
                0x80 => {
                    let p = self.take(1, "the protocol number")?[0];
                    if !(2..=5).contains(&p) {
                        return err(at + 1, "pickle protocol 2 to 5", format!("protocol {p}"));
                    }
                }
                0x95 => {
                    self.take(8, "a frame length")?;
                }
                b'.' => return self.pop(at),
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return err(at, format!("at most {MAX_MARKS} open marks"), "more");
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.uint(4, "an int")? as u32 as i32;
                    self.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.uint(1, "an int")?;
                    self.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.uint(2, "an int")?;
                    self.push(Value::Int(v as i64))
                }
                0x8a => {
                    let n = self.len(1, "a long")?;
                    if n > 8 {
                        return err(at, "a long of at most 8 bytes", format!("{n} bytes"));
                    }
                    let b = self.take(n, "a long")?;
                    let mut v = b.iter().rev().fold(0i64, |acc, &x| (acc << 8) | x as i64);
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Value::Int(v))
                }
                b'G' => {
                    let b = self.take(8, "a float")?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.push(Value::Float(v))
                }
                b'U' | b'C' => {
                    let n = self.len(1, "a string")?;
                    let b = self.take(n, "a string")?.to_vec();
                    self.push(Value::Bytes(Rc::new(b)))
                }
                b'T' | b'B' | 0x8e | 0x96 => {
                    let n = self.len(if op == 0x8e || op == 0x96 { 8 } else { 4 }, "a byte string")?;
                    let b = self.take(n, "a byte string")?.to_vec();
                    self.push(Value::Bytes(Rc::new(b)))
                }
                b'X' | 0x8c | 0x8d => {
                    let n = self.len(
                        match op {
                            0x8c => 1,
                            b'X' => 4,
                            _ => 8,
                        },
                        "a unicode string",
                    )?;
                    let b = self.take(n, "a unicode string")?;
                    let s = std::str::from_utf8(b).map_err(|e| At(at, "UTF-8 text".into(), e.to_string()))?;
                    self.push(Value::Str(s.into()))
                }
                b')' => self.push(Value::Tuple(Rc::new(vec![]))),
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.push(Value::Tuple(Rc::new(items)))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return err(at, format!("{n} values for a tuple"), format!("{}", self.stack.len()));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(Rc::new(items)))
                }
                b']' => self.push(Value::List(Rc::new(RefCell::new(vec![])))),
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.push(Value::List(Rc::new(RefCell::new(items))))
                }
                b'a' | b'e' => {
                    let items = if op == b'a' { vec![self.pop(at)?] } else { self.pop_mark(at)? };
                    match self.top(at)? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        other => return err(at, "a list to append to", other.type_name()),
                    }
                }
                b'}' => self.push(Value::Dict(Rc::new(RefCell::new(vec![])))),
                b'd' => {
                    let items = self.pop_mark(at)?;
                    let d = Value::Dict(Rc::new(RefCell::new(vec![])));
                    set_items(&d, items, at)?;
                    self.push(d)
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop(at)?;
                        vec![self.pop(at)?, v]
                    } else {
                        self.pop_mark(at)?
                    };
                    let d = self.top(at)?.clone();
                    set_items(&d, items, at)?;
                }
                b'q' => {
                    let k = self.uint(1, "a memo key")? as u32;
                    self.memo_put(at, k)?
                }
                b'r' => {
                    let k = self.uint(4, "a memo key")? as u32;
                    self.memo_put(at, k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(at, k)?
                }
                b'h' => {
                    let k = self.uint(1, "a memo key")? as u32;
                    self.memo_get(at, k)?
                }
                b'j' => {
                    let k = self.uint(4, "a memo key")? as u32;
                    self.memo_get(at, k)?
                }
                b'c' => {
                    let module = self.line("a module name")?;
                    let name = self.line("a global name")?;
                    self.push(Value::Global(Rc::new((module, name))))
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    match (module.text(), name.text()) {
                        (Some(m), Some(n)) => self.push(Value::Global(Rc::new((m, n)))),
                        _ => {
                            return err(
                                at,
                                "module and name strings",
                                format!("{} and {}", module.type_name(), name.type_name()),
                            )
                        }
                    }
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let f = self.pop(at)?;
                    let v = reduce(f, args, at)?;
                    self.push(v)
                }
                b'b' => {
                    let state = self.pop(at)?;
                    let obj = self.top(at)?.clone();
                    build(&obj, state, at)?;
                }
                _ => {
                    return err(
                        at,
                        "a binary pickle opcode of lists, dicts, strings, numbers or numpy arrays",
                        format!("opcode 0x{op:02x}"),
                    )
                }
            }
        }
    }
}

fn set_items(d: &Value, items: Vec<Value>, at: usize) -> R<()> {
    let Value::Dict(d) = d else {
        return err(at, "a dict to set items in", d.type_name());
    };
    if !items.len().is_multiple_of(2) {
        return err(at, "key-value pairs", format!("{} values", items.len()));
    }
    let mut it = items.into_iter();
    let mut d = d.borrow_mut();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        match d.iter_mut().find(|(old, _)| same_key(old, &k)) {
            Some(slot) => slot.1 = v,
            None => d.push((k, v)),
        }
    }
    Ok(())
}

fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        _ => matches!((a.text(), b.text()), (Some(x), Some(y)) if x == y),
    }
}

pub(super) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

/// Reads a whole pickle held in `bytes` (read from `path`, named in errors).
pub fn read(path: &Path, bytes: &[u8]) -> Result<Value, DataError> {
    let mut m = Machine { bytes, pos: 0, stack: vec![], marks: vec![], memo: HashMap::new() };
    m.run().map_err(|At(at, expected, found)| DataError::format(path, at, expected, found))
}
