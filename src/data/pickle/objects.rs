//! The Python objects the pickle machine builds beyond plain data: numpy dtypes and arrays
//! (`numpy.dtype`, `_reconstruct` + BUILD, `_frombuffer`) and `_codecs.encode` (Python 3's protocol-2
//! bytes).
use std::cell::RefCell;
use std::rc::Rc;

use super::{err, int_of, At, Value, R};

/// A numpy array: its dtype (`u1`, `<i8`, `<f4`, …), shape and raw C-order bytes.
#[derive(Debug)]
pub struct Array {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Rc<Vec<u8>>,
}

/// A numpy dtype: kind (`u`, `i`, `f`, `b`), item size in bytes, little endian or not.
#[derive(Clone, Debug, PartialEq)]
pub struct Dtype {
    pub kind: char,
    pub size: usize,
    pub little: bool,
}

impl Dtype {
    /// From numpy's type string (`u1`, `<f4`, `>i8`, `int64`, `float32`, `uint8`, `bool`, …).
    fn parse(s: &str) -> Option<Self> {
        let (little, body) = match s.as_bytes().first()? {
            b'<' | b'=' | b'|' => (true, &s[1..]),
            b'>' => (false, &s[1..]),
            _ => (true, s),
        };
        let named = |n: &str| -> Option<(char, usize)> {
            let (kind, rest) = [("uint", 'u'), ("int", 'i'), ("float", 'f')]
                .iter()
                .find_map(|(p, k)| n.strip_prefix(p).map(|r| (*k, r)))?;
            Some((kind, rest.parse::<usize>().ok()? / 8))
        };
        let (kind, size) = match body {
            "bool" | "b1" | "?" => ('b', 1),
            _ => match named(body) {
                Some(ks) => ks,
                None => {
                    let kind = body.chars().next()?;
                    (kind, body[kind.len_utf8()..].parse().ok()?)
                }
            },
        };
        let ok = match kind {
            'u' | 'i' => [1, 2, 4, 8].contains(&size),
            'f' => [4, 8].contains(&size),
            'b' => size == 1,
            _ => false,
        };
        ok.then_some(Self { kind, size, little })
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", if self.little { '<' } else { '>' }, self.kind, self.size)
    }
}

/// An array's values as `u8` (a `u1` array) or as integers (labels of any integer dtype).
impl Array {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Integer values (any integer or bool dtype).
    pub fn ints(&self) -> Option<Vec<i64>> {
        if !matches!(self.dtype.kind, 'u' | 'i' | 'b') {
            return None;
        }
        let n = self.dtype.size;
        Some(
            self.data
                .chunks_exact(n)
                .map(|c| {
                    let mut b = [0u8; 8];
                    if self.dtype.little {
                        b[..n].copy_from_slice(c);
                    } else {
                        b[..n].iter_mut().zip(c.iter().rev()).for_each(|(d, s)| *d = *s);
                    }
                    let u = u64::from_le_bytes(b);
                    if self.dtype.kind == 'i' && n < 8 && u >> (8 * n - 1) & 1 == 1 {
                        (u | (!0u64 << (8 * n))) as i64
                    } else {
                        u as i64
                    }
                })
                .collect(),
        )
    }
}

pub(super) fn dtype_of(v: &Value) -> Option<Dtype> {
    match v {
        Value::Dtype(d) => Some(d.borrow().clone()),
        _ => Dtype::parse(&v.text()?),
    }
}

/// Shape from a tuple of non-negative ints.
fn shape_of(v: &Value, at: usize) -> R<Vec<usize>> {
    let items = v.items().ok_or_else(|| At(at, "an array shape (a tuple)".into(), v.type_name().into()))?;
    items
        .iter()
        .map(|d| match int_of(d) {
            Some(n) if n >= 0 => Ok(n as usize),
            _ => err(at, "non-negative dimensions", format!("{d:?}")),
        })
        .collect()
}

/// An array of `shape` and `dtype` over `data`, whose length must match exactly.
fn array(dtype: Dtype, shape: Vec<usize>, data: Rc<Vec<u8>>, at: usize) -> R<Array> {
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let need = numel.and_then(|n| n.checked_mul(dtype.size));
    if need != Some(data.len()) {
        return err(at, format!("{shape:?} × {} bytes of array data", dtype.size), format!("{} bytes", data.len()));
    }
    Ok(Array { dtype, shape, data })
}

fn is(f: &(String, String), modules: &[&str], name: &str) -> bool {
    modules.contains(&f.0.as_str()) && f.1 == name
}

/// Calls the few callables these files use.
pub(super) fn reduce(f: Value, args: Value, at: usize) -> R<Value> {
    let Value::Global(g) = &f else {
        return err(at, "a class or function to call", f.type_name());
    };
    let a = args.items().ok_or_else(|| At(at, "a tuple of arguments".into(), args.type_name().into()))?;
    const MULTIARRAY: [&str; 2] = ["numpy.core.multiarray", "numpy._core.multiarray"];
    const NUMERIC: [&str; 2] = ["numpy.core.numeric", "numpy._core.numeric"];
    if is(g, &MULTIARRAY, "_reconstruct") {
        return Ok(Value::Array(Rc::new(RefCell::new(None))));
    }
    if is(g, &["numpy"], "dtype") {
        let d = a.first().and_then(dtype_of);
        return match d {
            Some(d) => Ok(Value::Dtype(Rc::new(RefCell::new(d)))),
            None => err(at, "a numeric numpy dtype (u1, i8, f4, …)", format!("{:?}", a.first().and_then(Value::text))),
        };
    }
    if is(g, &["_codecs"], "encode") {
        let s = a.first().and_then(|s| match s {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        });
        let Some(s) = s else { return err(at, "_codecs.encode of a str", "other arguments") };
        let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
        return match bytes {
            Some(b) => Ok(Value::Bytes(Rc::new(b))),
            None => err(at, "Latin-1 text to encode", "a character above U+00FF"),
        };
    }
    if is(g, &NUMERIC, "_frombuffer") {
        // _frombuffer(buffer, dtype, shape, order)
        let (Some(Value::Bytes(data)), Some(dtype), Some(shape)) = (a.first(), a.get(1).and_then(dtype_of), a.get(2))
        else {
            return err(at, "_frombuffer(bytes, dtype, shape, order)", "other arguments");
        };
        let shape = shape_of(shape, at)?;
        if a.get(3).and_then(Value::text).as_deref() == Some("F") && shape.len() > 1 {
            return err(at, "a C-order array", "a Fortran-order one");
        }
        let arr = array(dtype, shape, data.clone(), at)?;
        return Ok(Value::Array(Rc::new(RefCell::new(Some(arr)))));
    }
    err(at, "numpy arrays, lists, dicts, strings or numbers", format!("a call of {}.{}", g.0, g.1))
}

/// Applies BUILD's state to a dtype or a reconstructed array.
pub(super) fn build(obj: &Value, state: Value, at: usize) -> R<()> {
    let s = state.items().ok_or_else(|| At(at, "a state tuple".into(), state.type_name().into()))?;
    match obj {
        Value::Dtype(d) => {
            // (version, byte order, …)
            if let Some(order) = s.get(1).and_then(Value::text) {
                d.borrow_mut().little = order != ">";
            }
            Ok(())
        }
        Value::Array(slot) => {
            // (version, shape, dtype, is_fortran, raw bytes)
            let (Some(shape), Some(dtype), Some(fortran), Some(raw)) =
                (s.get(1), s.get(2).and_then(dtype_of), s.get(3).and_then(int_of), s.get(4))
            else {
                return err(
                    at,
                    "an array state (version, shape, dtype, is_fortran, data)",
                    format!("{} items", s.len()),
                );
            };
            let shape = shape_of(shape, at)?;
            if fortran != 0 && shape.iter().filter(|&&d| d > 1).count() > 1 {
                return err(at, "a C-order array", "a Fortran-order one");
            }
            let Value::Bytes(data) = raw else {
                return err(at, "the array's raw bytes", raw.type_name());
            };
            *slot.borrow_mut() = Some(array(dtype, shape, data.clone(), at)?);
            Ok(())
        }
        other => err(at, "a numpy dtype or array to BUILD", other.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::Dtype;

    #[test]
    fn dtype_strings_parse_by_hand() {
        let d = |s: &str| Dtype::parse(s).map(|d| (d.kind, d.size, d.little));
        assert_eq!(d("<f4"), Some(('f', 4, true)));
        assert_eq!(d(">i8"), Some(('i', 8, false)));
        assert_eq!(d("|u1"), Some(('u', 1, true)));
        assert_eq!(d("uint8"), Some(('u', 1, true)));
        assert_eq!(d("bool"), Some(('b', 1, true)));
        assert_eq!(d("<f2"), None);
        // A multi-byte first character (found by the fuzzer: it used to slice inside it).
        assert_eq!(d("×1"), None);
        assert_eq!(d("<ÿ1"), None);
        assert_eq!(d(""), None);
    }
}
