//! `.npy` files: read with `npyz` (header, dtype, byte order), a block of rows at a
//! time, and written in NumPy's own layout (little-endian, C order, header as NumPy
//! spells it).
//!
//! A C-order file is streamed: each read seeks to its first element and decodes only the
//! elements asked for, so memory holds one block, never the file. A Fortran-order file
//! stores the first axis fastest and has no contiguous rows; it is read whole and
//! reordered to C order once, when opened.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use npyz::{DType, NpyHeader, Order, TypeChar, TypeStr};
use wgpu_softmax::half::f16;

/// Bytes of the read buffer: large enough that a block is a few large reads.
const READ_BUFFER: usize = 1 << 20;
/// NumPy pads the header so the data starts on a 64-byte boundary.
const ALIGN: usize = 64;
const MAGIC: &[u8] = b"\x93NUMPY";

/// The float element types computed on: each is read in either byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Float {
    F16,
    F32,
    F64,
}

impl Float {
    /// NumPy's name.
    pub fn name(self) -> &'static str {
        match self {
            Float::F16 => "float16",
            Float::F32 => "float32",
            Float::F64 => "float64",
        }
    }

    /// The little-endian descr written for it.
    fn descr(self) -> &'static str {
        match self {
            Float::F16 => "<f2",
            Float::F32 => "<f4",
            Float::F64 => "<f8",
        }
    }
}

/// What a file's elements are, as far as this tool cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Float(Float),
    /// An integer of `bytes` bytes.
    Int {
        signed: bool,
        bytes: u64,
    },
    /// Anything else (bool, complex, strings, structured, ...): named, never read.
    Other,
}

/// A file's dtype: its kind and, for messages, what NumPy calls it.
#[derive(Clone, Debug)]
pub struct Dtype {
    pub kind: Kind,
    /// `float64 ('>f8')`, `a structured dtype [('a', '<f4'), ...]`, ...
    described: String,
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.described)
    }
}

impl Dtype {
    fn of(dtype: &DType) -> Self {
        match dtype {
            DType::Plain(ty) => Self::plain(ty),
            DType::Record(_) => Dtype {
                kind: Kind::Other,
                described: format!("a structured dtype {}", dtype.descr()),
            },
            DType::Array(..) => Dtype {
                kind: Kind::Other,
                described: format!("a subarray dtype {}", dtype.descr()),
            },
        }
    }

    fn plain(ty: &TypeStr) -> Self {
        let size = ty.size_field();
        let (kind, name) = match (ty.type_char(), size) {
            (TypeChar::Float, 2) => (Kind::Float(Float::F16), "float16".into()),
            (TypeChar::Float, 4) => (Kind::Float(Float::F32), "float32".into()),
            (TypeChar::Float, 8) => (Kind::Float(Float::F64), "float64".into()),
            (TypeChar::Float, n) => (Kind::Other, format!("float{}", n * 8)),
            (TypeChar::Int, n) => (
                Kind::Int {
                    signed: true,
                    bytes: n,
                },
                format!("int{}", n * 8),
            ),
            (TypeChar::Uint, n) => (
                Kind::Int {
                    signed: false,
                    bytes: n,
                },
                format!("uint{}", n * 8),
            ),
            (TypeChar::Complex, n) => (Kind::Other, format!("complex{}", n * 8)),
            (TypeChar::Bool, _) => (Kind::Other, "bool".into()),
            (TypeChar::TimeDelta, _) => (Kind::Other, "timedelta64".into()),
            (TypeChar::DateTime, _) => (Kind::Other, "datetime64".into()),
            (TypeChar::ByteStr, _) => (Kind::Other, "bytes".into()),
            (TypeChar::UnicodeStr, _) => (Kind::Other, "str".into()),
            (TypeChar::Object, _) => (Kind::Other, "object".into()),
            (TypeChar::RawData, _) => (Kind::Other, "void".into()),
            (_, _) => (Kind::Other, "an unknown type".into()),
        };
        Dtype {
            kind,
            described: format!("{name} ('{ty}')"),
        }
    }
}

/// Where a file's data comes from.
enum Source {
    /// A C-order file, read on demand.
    Stream(BufReader<File>),
    /// A Fortran-order file, read whole and reordered to C order.
    Memory(Vec<u8>),
}

/// An opened, checked `.npy` file whose data is read on demand.
pub struct NpyFile {
    header: NpyHeader,
    /// The shape as the file gives it (rank 0 and empty axes are allowed here: the
    /// caller decides).
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// Where the data starts in the file.
    data_start: u64,
    /// Bytes per element.
    item: u64,
    source: Source,
}

impl NpyFile {
    /// Reads and checks the header; the data must be exactly what the shape needs.
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
        let file_len = file
            .metadata()
            .map_err(|e| format!("cannot read: {e}"))?
            .len();
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);
        let header = NpyHeader::from_reader(&mut reader).map_err(|e| header_error(&e))?;
        let data_start = reader
            .stream_position()
            .map_err(|e| format!("cannot read: {e}"))?;
        let dtype = Dtype::of(&header.dtype());
        let shape = header
            .shape()
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("axis of {d} is too long here")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut file = NpyFile {
            shape,
            item: header.dtype().num_bytes().unwrap_or(0) as u64,
            dtype,
            data_start,
            source: Source::Memory(Vec::new()),
            header,
        };
        // Only what can be read needs its size checked: a structured or string file is
        // refused by the caller, by its dtype.
        if matches!(file.dtype.kind, Kind::Other) {
            file.source = Source::Stream(reader);
            return Ok(file);
        }
        let needed = file
            .shape
            .iter()
            .try_fold(file.item, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| format!("shape {} is too large", tuple(&file.shape)))?;
        let actual = file_len.saturating_sub(data_start);
        if actual != needed {
            return Err(format!(
                "shape {} needs {needed} bytes of data but the file has {actual}{}",
                tuple(&file.shape),
                if actual < needed { " (truncated)" } else { "" },
            ));
        }
        file.source = match file.header.order() {
            Order::C => Source::Stream(reader),
            Order::Fortran => Source::Memory(fortran_to_c(&mut reader, &file.shape, file.item)?),
        };
        Ok(file)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The shape as NumPy writes it, for messages.
    pub fn shape_text(&self) -> String {
        tuple(&self.shape)
    }

    /// `count` elements from element `first` (in C order), each as `T` (which must be
    /// the file's type, in either byte order) mapped through `f`.
    pub fn read_map<T: npyz::Deserialize, U>(
        &mut self,
        first: usize,
        count: usize,
        mut f: impl FnMut(T) -> U,
    ) -> Result<Vec<U>, String> {
        let mut out = Vec::new();
        out.try_reserve_exact(count).map_err(|_| {
            format!(
                "cannot allocate {count} values ({} MiB)",
                (count as u64).saturating_mul(std::mem::size_of::<U>() as u64) >> 20
            )
        })?;
        let at = first as u64 * self.item;
        let header = self.header.clone();
        let read_error = |e: std::io::Error| format!("cannot read: {e}");
        match &mut self.source {
            Source::Stream(reader) => {
                let position = self.data_start + at;
                if reader.stream_position().map_err(read_error)? != position {
                    reader.seek(SeekFrom::Start(position)).map_err(read_error)?;
                }
                let data = npyz::NpyFile::with_header(header, reader.by_ref())
                    .data::<T>()
                    .map_err(|e| e.to_string())?;
                for value in data.take(count) {
                    out.push(f(value.map_err(read_error)?));
                }
            }
            Source::Memory(bytes) => {
                let data = npyz::NpyFile::with_header(header, &bytes[at as usize..])
                    .data::<T>()
                    .map_err(|e| e.to_string())?;
                for value in data.take(count) {
                    out.push(f(value.map_err(read_error)?));
                }
            }
        }
        Ok(out)
    }

    /// `count` elements from element `first`, as f32: float16 exactly, float64 rounded
    /// to nearest. Only for float files.
    pub fn read_f32(&mut self, first: usize, count: usize) -> Result<Vec<f32>, String> {
        match self.dtype.kind {
            Kind::Float(Float::F16) => self.read_map(first, count, |v: f16| v.to_f32()),
            Kind::Float(Float::F32) => self.read_map(first, count, |v: f32| v),
            Kind::Float(Float::F64) => self.read_map(first, count, |v: f64| v as f32),
            _ => Err(format!("the file holds {} values, not floats", self.dtype)),
        }
    }

    /// `count` elements from element `first` of an integer file, each as an i128
    /// (which holds every integer dtype).
    pub fn read_integers(&mut self, first: usize, count: usize) -> Result<Vec<i128>, String> {
        let Kind::Int { signed, bytes } = self.dtype.kind else {
            return Err(format!(
                "the file holds {} values, not integers",
                self.dtype
            ));
        };
        match (signed, bytes) {
            (true, 1) => self.read_map(first, count, |v: i8| v.into()),
            (true, 2) => self.read_map(first, count, |v: i16| v.into()),
            (true, 4) => self.read_map(first, count, |v: i32| v.into()),
            (true, 8) => self.read_map(first, count, |v: i64| v.into()),
            (false, 1) => self.read_map(first, count, |v: u8| v.into()),
            (false, 2) => self.read_map(first, count, |v: u16| v.into()),
            (false, 4) => self.read_map(first, count, |v: u32| v.into()),
            (false, 8) => self.read_map(first, count, |v: u64| v.into()),
            _ => Err(format!("{} is not an integer type read here", self.dtype)),
        }
    }
}

/// npyz's header errors, told as a user sees the file.
fn header_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "truncated .npy header".into(),
        _ if e.to_string().contains("magic") => "not an .npy file (no \\x93NUMPY magic)".into(),
        _ => format!("malformed .npy header: {e}"),
    }
}

/// Reads the whole data of a Fortran-order file (the first axis fastest) and returns it
/// in C order (the last axis fastest), element by element of `item` bytes.
fn fortran_to_c(reader: &mut impl Read, shape: &[usize], item: u64) -> Result<Vec<u8>, String> {
    let item = item as usize;
    let len = shape.iter().product::<usize>() * item;
    let mut fortran = Vec::new();
    fortran.try_reserve_exact(len).map_err(|_| {
        format!(
            "cannot allocate {} MiB to reorder a Fortran-order file",
            len >> 20
        )
    })?;
    fortran.resize(len, 0);
    reader
        .read_exact(&mut fortran)
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut c = Vec::new();
    c.try_reserve_exact(len).map_err(|_| {
        format!(
            "cannot allocate {} MiB to reorder a Fortran-order file",
            len >> 20
        )
    })?;
    // The Fortran stride of each axis, in elements: 1 for the first.
    let mut strides = Vec::with_capacity(shape.len());
    let mut stride = 1;
    for &d in shape {
        strides.push(stride);
        stride *= d;
    }
    // Walk C order with an odometer over the index, keeping the Fortran offset in step.
    let mut index = vec![0usize; shape.len()];
    let mut offset = 0usize;
    for _ in 0..len / item.max(1) {
        c.extend_from_slice(&fortran[offset * item..(offset + 1) * item]);
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            offset += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            offset -= strides[axis] * shape[axis];
            index[axis] = 0;
        }
    }
    Ok(c)
}

/// A Python tuple, as NumPy writes shapes: `()`, `(3,)`, `(2, 3)`.
pub fn tuple(dims: &[usize]) -> String {
    match dims {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// How an output file stores its elements: a float type, or int64 (sampled ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Float(Float),
    I64,
}

impl Stored {
    /// The little-endian descr written for it.
    fn descr(self) -> &'static str {
        match self {
            Stored::Float(f) => f.descr(),
            Stored::I64 => "<i8",
        }
    }
}

impl From<Float> for Stored {
    fn from(f: Float) -> Self {
        Stored::Float(f)
    }
}

/// An element type written to an output file, little-endian.
pub trait Encode: Copy {
    /// Appends `self` to `out` as `dtype` (little-endian).
    fn encode(self, dtype: Stored, out: &mut Vec<u8>);
}

impl Encode for f32 {
    fn encode(self, dtype: Stored, out: &mut Vec<u8>) {
        match dtype {
            Stored::Float(Float::F16) => out.extend(f16::from_f32(self).to_le_bytes()),
            Stored::Float(Float::F32) => out.extend(self.to_le_bytes()),
            // Exact: every f32 is an f64.
            Stored::Float(Float::F64) => out.extend(f64::from(self).to_le_bytes()),
            Stored::I64 => out.extend((self as i64).to_le_bytes()),
        }
    }
}

impl Encode for f16 {
    fn encode(self, dtype: Stored, out: &mut Vec<u8>) {
        match dtype {
            Stored::Float(Float::F16) => out.extend(self.to_le_bytes()),
            other => self.to_f32().encode(other, out),
        }
    }
}

impl Encode for i64 {
    fn encode(self, dtype: Stored, out: &mut Vec<u8>) {
        match dtype {
            Stored::I64 => out.extend(self.to_le_bytes()),
            Stored::Float(f) => (self as f32).encode(Stored::Float(f), out),
        }
    }
}

/// Writes `.npy` data of one dtype and shape to `sink`, a block of values at a time:
/// a version 1.0 header as NumPy writes it, then the values little-endian.
pub struct NpyWriter<W: Write> {
    sink: W,
    dtype: Stored,
    /// Values still to come; a short or long write is a bug of the caller, reported.
    remaining: usize,
    buffer: Vec<u8>,
}

impl<W: Write> NpyWriter<W> {
    /// Writes the header of a `dtype` array of `shape`.
    pub fn new(mut sink: W, dtype: impl Into<Stored>, shape: &[usize]) -> std::io::Result<Self> {
        let dtype = dtype.into();
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
            dtype.descr(),
            tuple(shape)
        );
        // Magic, version and length take 10 bytes; the header ends with '\n'.
        let unpadded = MAGIC.len() + 4 + header.len() + 1;
        header.extend(std::iter::repeat_n(
            ' ',
            unpadded.next_multiple_of(ALIGN) - unpadded,
        ));
        header.push('\n');
        let len = u16::try_from(header.len()).map_err(std::io::Error::other)?;
        sink.write_all(MAGIC)?;
        sink.write_all(&[1, 0])?;
        sink.write_all(&len.to_le_bytes())?;
        sink.write_all(header.as_bytes())?;
        Ok(NpyWriter {
            sink,
            dtype,
            remaining: shape.iter().product(),
            buffer: Vec::new(),
        })
    }

    /// Appends `values`.
    pub fn write<T: Encode>(&mut self, values: &[T]) -> std::io::Result<()> {
        if values.len() > self.remaining {
            return Err(std::io::Error::other("more values than the shape holds"));
        }
        self.remaining -= values.len();
        // Encoded a slice at a time, so the buffer stays small whatever the block.
        for slice in values.chunks(1 << 16) {
            self.buffer.clear();
            for &v in slice {
                v.encode(self.dtype, &mut self.buffer);
            }
            self.sink.write_all(&self.buffer)?;
        }
        Ok(())
    }

    /// Checks that every value was written and flushes: the sink back.
    pub fn finish(mut self) -> std::io::Result<W> {
        if self.remaining != 0 {
            return Err(std::io::Error::other(format!(
                "{} values were never written",
                self.remaining
            )));
        }
        self.sink.flush()?;
        Ok(self.sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `.npy` v1.0 file with the header dict `dict`, followed by `data`.
    fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    fn open(name: &str, bytes: &[u8]) -> Result<NpyFile, String> {
        let path = std::env::temp_dir().join(format!(
            "wgpu-softmax-npy-unit-{}-{name}.npy",
            std::process::id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let file = NpyFile::open(&path);
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn a_fortran_order_file_reads_in_c_order() {
        // A (2, 3, 2) array whose C-order values are 0..12, stored first axis fastest.
        let shape = [2, 3, 2];
        let mut fortran = [0.0f32; 12];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..2 {
                    fortran[i + 2 * (j + 3 * k)] = (i * 6 + j * 2 + k) as f32;
                }
            }
        }
        let data: Vec<u8> = fortran.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 2), }";
        let mut file = open("fortran", &npy(dict, &data)).unwrap();
        assert_eq!(file.shape, shape);
        assert_eq!(file.header.order(), Order::Fortran);
        let all = file.read_f32(0, 12).unwrap();
        assert_eq!(all, (0..12).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(file.read_f32(7, 3).unwrap(), [7.0, 8.0, 9.0]);
    }

    #[test]
    fn big_endian_values_read_as_their_value() {
        let data: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let dict = "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }";
        let mut file = open("big_endian", &npy(dict, &data)).unwrap();
        assert_eq!(file.dtype.kind, Kind::Float(Float::F64));
        assert_eq!(file.read_f32(0, 2).unwrap(), [1.5, -2.0]);
        assert_eq!(file.read_f32(1, 1).unwrap(), [-2.0]);
    }

    #[test]
    fn every_integer_width_reads_as_its_value() {
        let cases: [(&str, Vec<u8>); 3] = [
            ("|i1", vec![0xff, 3]),
            (">u2", vec![0x01, 0x00, 0x00, 0x03]),
            (
                "<i8",
                [-1i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        ];
        for (descr, data) in cases {
            let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}");
            let mut file = open("ints", &npy(&dict, &data)).unwrap();
            let got = file.read_integers(0, 2).unwrap();
            let want: [i128; 2] = if descr == ">u2" { [256, 3] } else { [-1, 3] };
            assert_eq!(got, want, "{descr}");
        }
    }

    #[test]
    fn dtypes_are_named_as_numpy_names_them() {
        let named = |descr: &str| {
            let dict = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}");
            open("named", &npy(&dict, &[0; 16])).map(|f| f.dtype.to_string())
        };
        assert_eq!(named("'<c8'").unwrap(), "complex64 ('<c8')");
        assert_eq!(named("'|b1'").unwrap(), "bool ('|b1')");
        let structured = named("[('a', '<f4'), ('b', '<i4')]").unwrap();
        assert!(structured.starts_with("a structured dtype"), "{structured}");
    }

    #[test]
    fn the_writer_spells_the_header_as_numpy_does() {
        let mut bytes = Vec::new();
        let mut writer = NpyWriter::new(&mut bytes, Float::F64, &[2]).unwrap();
        writer.write(&[1.0f32, 0.5]).unwrap();
        writer.finish().unwrap();
        let start = 10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        assert_eq!((start % 64, bytes.len()), (0, start + 16));
        let header = std::str::from_utf8(&bytes[10..start]).unwrap();
        assert!(header.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"));
        assert!(header.ends_with(" \n"), "{header:?}");
        assert_eq!(bytes[start..start + 8], 1.0f64.to_le_bytes());
    }

    #[test]
    fn the_writer_refuses_a_short_write() {
        let mut bytes = Vec::new();
        let mut writer = NpyWriter::new(&mut bytes, Float::F32, &[2, 2]).unwrap();
        writer.write(&[1.0f32]).unwrap();
        assert!(writer.finish().is_err());
    }
}
