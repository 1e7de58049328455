//! The `wgpu-softmax` binary, run as a user runs it: `.npy` round trips checked against
//! the f64 reference, and bad input answered with one `error:` line, never a panic.
//! Cargo builds the binary before it runs these tests and names it in
//! `CARGO_BIN_EXE_wgpu-softmax`.
//!
//! GPU cases may run on a software adapter, so their matrices are tiny. Bad-input cases
//! fail before the GPU is touched, which also keeps driver chatter out of their stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wgpu_softmax::half::f16;
use wgpu_softmax::internals::plan;
use wgpu_softmax::internals::reference::{self, Tolerance};
use wgpu_softmax::{block_on, Context, ContextOptions, HostInputs, MaskedRows, Options};

/// The binary under test.
fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wgpu-softmax"))
}

fn cli(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .expect("the wgpu-softmax binary starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A file under the temp dir, unique to this process and test, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(test: &str, name: &str) -> Self {
        let file = format!("wgpu-softmax-cli-{}-{test}-{name}", std::process::id());
        TempFile(std::env::temp_dir().join(file))
    }

    fn with_contents(test: &str, name: &str, contents: &[u8]) -> Self {
        let file = Self::new(test, name);
        std::fs::write(&file.0, contents).expect("writing a temp file");
        file
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8 here")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An `.npy` v1.0 file with a header dict of the given `descr` and `shape` (Python
/// syntax), padded as NumPy pads it, followed by `data`.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    npy_with_header(&dict, data)
}

/// An `.npy` v1.0 file with the header dict `dict` (Python syntax), padded as NumPy
/// pads it, followed by `data`.
fn npy_with_header(dict: &str, data: &[u8]) -> Vec<u8> {
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

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f16_bytes(values: &[f16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn u32_bytes(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads an `.npy` v1.0 file the CLI wrote: its header text and its values, float32
/// (`<f4`) or float16 (`<f2`, widened exactly to f32). Checks the layout NumPy
/// expects: data 64-byte aligned, header ending in a newline.
fn read_npy(path: &Path) -> (String, Vec<f32>) {
    let bytes = std::fs::read(path).expect("the output file exists");
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "magic and version 1.0");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = text(&bytes[10..10 + len]);
    assert_eq!((10 + len) % 64, 0, "data is 64-byte aligned: {header:?}");
    assert!(header.ends_with('\n'), "{header:?}");
    let data = &bytes[10 + len..];
    let values = if header.contains("'descr': '<f2'") {
        data.chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()
    } else {
        assert!(header.contains("'descr': '<f4'"), "{header:?}");
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    (header, values)
}

/// Runs the CLI on `values` saved with `shape` and returns the output file's header
/// and values.
fn round_trip(test: &str, shape: &str, values: &[f32], flags: &[&str]) -> (String, Vec<f32>) {
    let input = TempFile::with_contents(test, "in.npy", &npy("<f4", shape, &f32_bytes(values)));
    let output = TempFile::new(test, "out.npy");
    let mut args = vec!["--input", input.arg(), "--output", output.arg()];
    args.extend(flags);
    let out = cli(&args);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    read_npy(&output.0)
}

fn assert_matches_reference(got: &[f32], input: &[f32], cols: usize, options: &Options) {
    assert_matches_reference_with(got, input, cols, options, &HostInputs::default());
}

fn assert_matches_reference_with(
    got: &[f32],
    input: &[f32],
    cols: usize,
    options: &Options,
    inputs: &HostInputs<'_>,
) {
    let expected = reference::softmax_f64_with(input, cols, options, inputs);
    assert_eq!(got.len(), expected.len());
    let mismatch = reference::first_mismatch(got, &expected, Tolerance::for_op(options.op));
    assert_eq!(mismatch, None, "got {got:?}, expected {expected:?}");
}

/// A failure as the CLI promises it: the exit status, exactly one `error:` line on
/// stderr, and no panic. Returns that line.
fn assert_fails(args: &[&str], status: i32) -> String {
    let out = cli(args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(status),
        "args {args:?}, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

/// A file the CLI must refuse (exit status 1). Returns the error line.
fn assert_file_refused(test: &str, contents: &[u8]) -> String {
    let input = TempFile::with_contents(test, "in.npy", contents);
    assert_fails(&["--input", input.arg()], 1)
}

const LOGITS: [f32; 6] = [7.0, 4.0, 0.0, 1.0, 1.0, 1.0];

#[test]
fn round_trip_of_a_2d_file_matches_the_reference() {
    let (header, got) = round_trip("round_trip_2d", "(2, 3)", &LOGITS, &[]);
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'shape': (2, 3)"), "{header}");
    assert_matches_reference(&got, &LOGITS, 3, &Options::softmax());
}

#[test]
fn one_d_input_stays_one_d() {
    let (header, got) = round_trip("one_d", "(3,)", &LOGITS[..3], &[]);
    assert!(header.contains("'shape': (3,)"), "{header}");
    assert_matches_reference(&got, &LOGITS[..3], 3, &Options::softmax());
}

#[test]
fn log_flag_gives_log_softmax() {
    let (_, got) = round_trip("log", "(2, 3)", &LOGITS, &["--log"]);
    assert_matches_reference(&got, &LOGITS, 3, &Options::log_softmax());
}

#[test]
fn temperature_flag_divides_the_logits() {
    let (_, got) = round_trip("temperature", "(2, 3)", &LOGITS, &["--temperature", "3"]);
    let options = Options::softmax().with_temperature(3.0);
    assert_matches_reference(&got, &LOGITS, 3, &options);
}

#[test]
fn version_2_header_is_read() {
    // Version 2.0 differs from 1.0 only in a 4-byte header length.
    let v1 = npy("<f4", "(2, 3)", &f32_bytes(&LOGITS));
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend(u32::from(u16::from_le_bytes([v1[8], v1[9]])).to_le_bytes());
    v2.extend(&v1[10..]);
    let input = TempFile::with_contents("v2", "in.npy", &v2);
    let output = TempFile::new("v2", "out.npy");
    let out = cli(&["--input", input.arg(), "--output", output.arg()]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_matches_reference(&read_npy(&output.0).1, &LOGITS, 3, &Options::softmax());
}

#[test]
fn input_without_output_prints_a_summary() {
    let input = TempFile::with_contents(
        "summary",
        "in.npy",
        &npy("<f4", "(2, 3)", &f32_bytes(&LOGITS)),
    );
    let out = cli(&["--input", input.arg()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("shape: 2 x 3"), "{stdout}");
    assert!(stdout.contains("float32 in, float32 out"), "{stdout}");
    assert!(stdout.contains("first row: [0.9517"), "{stdout}");
}

#[test]
fn small_generated_run_checks_against_the_reference() {
    let out = cli(&["--rows", "8", "--cols", "100"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("max abs error"), "{stdout}");
    assert!(stdout.contains("): ok"), "{stdout}");
    assert!(stdout.contains("softmax / copy: "), "{stdout}");
}

#[test]
fn help_prints_usage_and_succeeds() {
    let out = cli(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--temperature T"));
    assert!(out.stderr.is_empty());
}

#[test]
fn missing_file_is_an_error() {
    let missing = TempFile::new("missing", "absent.npy");
    assert_fails(&["--input", missing.arg()], 1);
}

#[test]
fn non_npy_file_is_an_error() {
    assert_file_refused("not_npy", b"rows,cols\n1,2\n");
}

// float64, big-endian, Fortran-order and rank >= 3 files, refused until issue 15, are
// read now: their tests are under "Any float .npy" below.

#[test]
fn empty_rows_axis_is_an_error() {
    assert_file_refused("empty_rows", &npy("<f4", "(0, 3)", &[]));
}

#[test]
fn empty_cols_axis_is_an_error() {
    assert_file_refused("empty_cols", &npy("<f4", "(2, 0)", &[]));
}

#[test]
fn truncated_data_is_an_error() {
    assert_file_refused("truncated", &npy("<f4", "(2, 3)", &f32_bytes(&LOGITS[..5])));
}

/// NumPy reads the header dict as a Python literal, so a key given twice keeps its last
/// value; the CLI reads the file as NumPy does. In the first header the first shape
/// fits the data too: taking it would silently give 3 rows of 2.
#[test]
fn a_header_key_given_twice_keeps_its_last_value_as_in_numpy() {
    let dicts = [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), 'shape': (2, 3), }",
        "{'descr': '<f2', 'fortran_order': True, 'shape': (2, 3), 'descr': '<f4', \
         'fortran_order': False}",
    ];
    for (i, dict) in dicts.into_iter().enumerate() {
        let test = format!("duplicate_key_{i}");
        let bytes = npy_with_header(dict, &f32_bytes(&LOGITS));
        let input = TempFile::with_contents(&test, "in.npy", &bytes);
        let output = TempFile::new(&test, "out.npy");
        let out = cli(&["--input", input.arg(), "--output", output.arg()]);
        assert!(out.status.success(), "{dict}: {}", text(&out.stderr));
        let (header, got) = read_npy(&output.0);
        assert!(header.contains("'shape': (2, 3)"), "{dict}: {header}");
        assert_matches_reference(&got, &LOGITS, 3, &Options::softmax());
    }
}

#[test]
fn zero_temperature_is_a_usage_error() {
    assert_fails(&["--rows", "1", "--cols", "3", "--temperature", "0"], 2);
}

#[test]
fn nan_temperature_is_a_usage_error() {
    assert_fails(&["--rows", "1", "--cols", "3", "--temperature", "nan"], 2);
}

#[test]
fn non_numeric_temperature_is_a_usage_error() {
    assert_fails(&["--temperature", "abc"], 2);
}

#[test]
fn zero_rows_is_a_usage_error() {
    assert_fails(&["--rows", "0"], 2);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    assert_fails(&["--bogus"], 2);
}

#[test]
fn input_without_a_value_is_a_usage_error() {
    assert_fails(&["--input"], 2);
}

#[test]
fn a_small_gpu_memory_budget_streams_and_still_checks_out() {
    let out = cli(&["--rows", "64", "--cols", "20000", "--max-gpu-mib", "1"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("): ok"), "{stdout}");
}

#[test]
fn zero_gpu_memory_budget_is_a_usage_error() {
    assert_fails(&["--max-gpu-mib", "0"], 2);
}

#[test]
fn stats_flag_writes_max_and_log_sum_exp_per_row() {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let input = dir.join(format!("cli-stats-in-{pid}.npy"));
    let stats = dir.join(format!("cli-stats-out-{pid}.npy"));
    let values = [7.0f32, 4.0, 0.0, 1.0, 1.0, 1.0];
    std::fs::write(&input, npy("<f4", "(2, 3)", &f32_bytes(&values))).unwrap();
    let out = cli(&[
        "--input",
        input.to_str().unwrap(),
        "--stats",
        stats.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (header, got) = read_npy(&stats);
    assert!(header.contains("(2, 2)"), "{header}");
    let want = reference::row_stats_f64(&values, 3, 1.0);
    for (g, w) in got.chunks(2).zip(&want) {
        assert!((f64::from(g[0]) - w[0]).abs() < 1e-6 && (f64::from(g[1]) - w[1]).abs() < 1e-5);
    }
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&stats);
}

#[test]
fn stats_without_input_is_a_usage_error() {
    assert_fails(&["--stats", "s.npy"], 2);
}

/// `--output` and `--stats` naming one file, spelled alike or not: the second write
/// would silently replace the first, so the CLI refuses before it writes anything.
#[test]
fn output_and_stats_naming_one_file_are_refused() {
    let input = f32_file("same_output", "in.npy", "(2, 3)", &LOGITS);
    let file = TempFile::new("same_output", "out.npy");
    let name = file.0.file_name().expect("a file name");
    let dotted = file.0.parent().expect("a directory").join(".").join(name);
    let dotted = dotted.to_str().expect("temp paths are UTF-8 here");
    for (output, stats) in [
        (file.arg(), file.arg()),
        (file.arg(), dotted),
        (dotted, file.arg()),
    ] {
        let args = ["--input", input.arg(), "--output", output, "--stats", stats];
        let line = assert_fails(&args, 1);
        assert!(line.contains("same file"), "{line}");
        assert!(!file.0.exists(), "{} was written", file.0.display());
    }
    // A link to a file not there yet: writing through it would create that file.
    #[cfg(unix)]
    {
        let link = TempFile::new("same_output", "link.npy");
        std::os::unix::fs::symlink(&file.0, &link.0).expect("a symbolic link");
        let args = [
            "--input",
            input.arg(),
            "--output",
            link.arg(),
            "--stats",
            file.arg(),
        ];
        assert!(assert_fails(&args, 1).contains("same file"));
        assert!(!file.0.exists(), "{} was written", file.0.display());
    }
}

// ---------------------------------------------------------------------------------------
// Masks, causal masks, per-row lengths and temperatures

/// A [4, 3] input: row 3 repeats row 1, so both must come out alike under a 2-row mask.
const LOGITS_4X3: [f32; 12] = [7.0, 4.0, 0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 2.0, 1.0, 2.0, 3.0];
/// A [3, 4] input for causal masks.
const LOGITS_3X4: [f32; 12] = [1.0, 2.0, 3.0, 4.0, 0.5, -1.0, 2.0, 0.0, 3.0, 3.0, 1.0, -2.0];
/// A [3, 5] input for lengths.
const LOGITS_3X5: [f32; 15] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 0.0, -1.0, 2.0, 1.0, 0.5, 3.0, 3.0, 1.0, -2.0, 4.0,
];

/// A temp `.npy` file of int32 values of the given shape.
fn i32_file(test: &str, name: &str, shape: &str, values: &[i32]) -> TempFile {
    TempFile::with_contents(test, name, &npy("<i4", shape, &i32_bytes(values)))
}

/// A temp `.npy` file of float32 values of the given shape.
fn f32_file(test: &str, name: &str, shape: &str, values: &[f32]) -> TempFile {
    TempFile::with_contents(test, name, &npy("<f4", shape, &f32_bytes(values)))
}

/// Runs `--input` (a [3, 5] `LOGITS_3X5` file) with `flags`, expecting the failure
/// every bad row input gives: exit status 1 before the GPU is touched.
fn assert_row_input_refused(test: &str, flags: &[&str]) {
    let input = f32_file(test, "in.npy", "(3, 5)", &LOGITS_3X5);
    let mut args = vec!["--input", input.arg()];
    args.extend(flags);
    assert_fails(&args, 1);
}

#[test]
fn mask_rows_repeat_over_the_input_rows() {
    let mask = [0.0, f32::NEG_INFINITY, 0.0, 1.0, 0.0, -2.0];
    let file = f32_file("mask_2d", "mask.npy", "(2, 3)", &mask);
    let (_, got) = round_trip("mask_2d", "(4, 3)", &LOGITS_4X3, &["--mask", file.arg()]);
    let inputs = HostInputs::default().with_mask(&mask, 2);
    assert_matches_reference_with(&got, &LOGITS_4X3, 3, &Options::softmax(), &inputs);
    assert_eq!(got[1], 0.0, "the -inf entry masks out row 0, column 1");
    assert_eq!(
        got[3..6],
        got[9..12],
        "equal rows 1 and 3 both take mask row 1"
    );
}

#[test]
fn one_d_mask_applies_to_every_row() {
    let mask = [f32::NEG_INFINITY, 0.0, 1.5];
    let file = f32_file("mask_1d", "mask.npy", "(3,)", &mask);
    let (_, got) = round_trip("mask_1d", "(4, 3)", &LOGITS_4X3, &["--mask", file.arg()]);
    let inputs = HostInputs::default().with_mask(&mask, 1);
    assert_matches_reference_with(&got, &LOGITS_4X3, 3, &Options::softmax(), &inputs);
    assert!(got.chunks(3).all(|row| row[0] == 0.0), "{got:?}");
}

#[test]
fn causal_flag_keeps_columns_up_to_the_row() {
    let (_, got) = round_trip("causal", "(3, 4)", &LOGITS_3X4, &["--causal"]);
    assert_matches_reference(&got, &LOGITS_3X4, 4, &Options::softmax().with_causal(0));
    assert_eq!(got[0], 1.0, "row 0 keeps column 0 only: {got:?}");
    assert_eq!(
        &got[6..8],
        &[0.0; 2],
        "row 1 drops columns 2 and 3: {got:?}"
    );
    assert_eq!(got[11], 0.0, "row 2 drops column 3: {got:?}");
}

#[test]
fn causal_offset_shifts_the_diagonal() {
    let flags = ["--causal-offset", "1"];
    let (_, got) = round_trip("causal_offset", "(3, 4)", &LOGITS_3X4, &flags);
    assert_matches_reference(&got, &LOGITS_3X4, 4, &Options::softmax().with_causal(1));
    assert_eq!(
        &got[2..4],
        &[0.0; 2],
        "row 0 keeps columns 0 and 1: {got:?}"
    );
    assert!(
        got[8..12].iter().all(|&p| p > 0.0),
        "row 2 keeps all: {got:?}"
    );
}

#[test]
fn causal_offset_in_a_generated_run_checks_out_across_check_blocks() {
    // Rows of 2^19 + 1 columns make each reference block one row, so rows past the
    // first are checked with the offset their place in the matrix gives them.
    let out = cli(&["--rows", "3", "--cols", "524289", "--causal-offset", "1"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("causal offset 1"), "{stdout}");
    assert!(stdout.contains("): ok"), "{stdout}");
}

#[test]
fn int32_lengths_mask_columns_past_each_row_length() {
    let lengths = i32_file("lengths_i32", "lengths.npy", "(3,)", &[2, 5, 9]);
    let flags = ["--lengths", lengths.arg()];
    let (_, got) = round_trip("lengths_i32", "(3, 5)", &LOGITS_3X5, &flags);
    let inputs = HostInputs::default().with_lengths(&[2, 5, 9]);
    assert_matches_reference_with(&got, &LOGITS_3X5, 5, &Options::softmax(), &inputs);
    assert_eq!(&got[2..5], &[0.0; 3], "{got:?}");
}

#[test]
fn uint32_lengths_are_read_too() {
    let bytes = npy("<u4", "(3,)", &u32_bytes(&[1, 3, 4]));
    let lengths = TempFile::with_contents("lengths_u32", "lengths.npy", &bytes);
    let flags = ["--lengths", lengths.arg()];
    let (_, got) = round_trip("lengths_u32", "(3, 5)", &LOGITS_3X5, &flags);
    let inputs = HostInputs::default().with_lengths(&[1, 3, 4]);
    assert_matches_reference_with(&got, &LOGITS_3X5, 5, &Options::softmax(), &inputs);
    assert_eq!(got[0], 1.0, "{got:?}");
}

#[test]
fn per_row_temperatures_multiply_the_temperature() {
    let temps = [0.5f32, 1.0, 4.0];
    let file = f32_file("temperatures", "temps.npy", "(3,)", &temps);
    let flags = ["--temperatures", file.arg(), "--temperature", "2"];
    let (_, got) = round_trip("temperatures", "(3, 5)", &LOGITS_3X5, &flags);
    let inputs = HostInputs::default().with_temperatures(&temps);
    let options = Options::softmax().with_temperature(2.0);
    assert_matches_reference_with(&got, &LOGITS_3X5, 5, &options, &inputs);
}

#[test]
fn masked_rows_zero_gives_zeros_for_a_zero_length_row() {
    let lengths = i32_file("masked_zero", "lengths.npy", "(3,)", &[0, 5, 3]);
    let flags = ["--lengths", lengths.arg(), "--masked-rows", "zero"];
    let (_, got) = round_trip("masked_zero", "(3, 5)", &LOGITS_3X5, &flags);
    assert_eq!(&got[..5], &[0.0; 5], "{got:?}");
    let inputs = HostInputs::default().with_lengths(&[0, 5, 3]);
    let options = Options::softmax().with_masked_rows(MaskedRows::Zero);
    assert_matches_reference_with(&got, &LOGITS_3X5, 5, &options, &inputs);
}

#[test]
fn stats_take_the_row_inputs_into_account() {
    let lengths = i32_file("stats_inputs", "lengths.npy", "(3,)", &[2, 5, 1]);
    let input = f32_file("stats_inputs", "in.npy", "(3, 5)", &LOGITS_3X5);
    let stats = TempFile::new("stats_inputs", "stats.npy");
    let args = [
        "--input",
        input.arg(),
        "--stats",
        stats.arg(),
        "--lengths",
        lengths.arg(),
        "--causal",
    ];
    let out = cli(&args);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let inputs = HostInputs::default().with_lengths(&[2, 5, 1]);
    let options = Options::softmax().with_causal(0);
    let want = reference::row_stats_f64_with(&LOGITS_3X5, 5, &options, &inputs);
    let (_, got) = read_npy(&stats.0);
    for (g, w) in got.chunks(2).zip(&want) {
        let close = |g: f32, w: f64| (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs());
        assert!(
            close(g[0], w[0]) && close(g[1], w[1]),
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn mask_of_another_width_is_an_error() {
    let mask = f32_file("mask_width", "mask.npy", "(1, 4)", &[0.0; 4]);
    assert_row_input_refused("mask_width", &["--mask", mask.arg()]);
}

#[test]
fn lengths_count_other_than_rows_is_an_error() {
    let lengths = i32_file("lengths_count", "lengths.npy", "(2,)", &[1, 2]);
    assert_row_input_refused("lengths_count", &["--lengths", lengths.arg()]);
}

#[test]
fn negative_length_is_an_error() {
    let lengths = i32_file("lengths_negative", "lengths.npy", "(3,)", &[1, -1, 2]);
    assert_row_input_refused("lengths_negative", &["--lengths", lengths.arg()]);
}

#[test]
fn temperatures_count_other_than_rows_is_an_error() {
    let temps = f32_file("temps_count", "temps.npy", "(4,)", &[1.0; 4]);
    assert_row_input_refused("temps_count", &["--temperatures", temps.arg()]);
}

#[test]
fn unknown_masked_rows_policy_is_a_usage_error() {
    assert_fails(&["--rows", "1", "--cols", "3", "--masked-rows", "maybe"], 2);
}

#[test]
fn negative_causal_offset_is_a_usage_error() {
    assert_fails(&["--rows", "1", "--cols", "3", "--causal-offset", "-1"], 2);
}

#[test]
fn mask_without_input_is_a_usage_error() {
    assert_fails(&["--mask", "m.npy"], 2);
}

// ---------------------------------------------------------------------------------------
// Backward pass

/// A [2, 4] input and incoming gradient for `--backward`.
const LOGITS_2X4: [f32; 8] = [1.0, 2.0, 0.5, -1.0, 3.0, 0.0, 1.5, 2.0];
const GRAD_2X4: [f32; 8] = [0.5, -1.0, 2.0, 0.25, -0.5, 1.0, 0.0, 3.0];

/// Runs `--backward` on `logits` and `grad`, both saved with `shape`, and returns the
/// output file's header and values.
fn backward_round_trip(
    test: &str,
    shape: &str,
    (logits, grad): (&[f32], &[f32]),
    flags: &[&str],
) -> (String, Vec<f32>) {
    let dy = f32_file(test, "grad.npy", shape, grad);
    let mut args = vec!["--backward", "--grad", dy.arg()];
    args.extend(flags);
    round_trip(test, shape, logits, &args)
}

/// Checks dx against `backward_f64` of the f32-rounded forward output, as the CLI feeds
/// the library's y to the backward pass. The absolute slack covers the GPU's y differing
/// from the reference's by f32 rounding.
fn assert_gradient_matches(
    got: &[f32],
    (logits, dy): (&[f32], &[f32]),
    cols: usize,
    options: &Options,
) {
    let tolerance = Tolerance {
        abs: reference::BACKWARD_F32.abs + 1e-5,
        ..reference::BACKWARD_F32
    };
    assert_gradient_within(got, (logits, dy), cols, options, tolerance);
}

/// [`assert_gradient_matches`] within `tolerance`.
fn assert_gradient_within(
    got: &[f32],
    (logits, dy): (&[f32], &[f32]),
    cols: usize,
    options: &Options,
    tolerance: Tolerance,
) {
    let y: Vec<f32> = reference::softmax_f64(logits, cols, options)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let expected = reference::backward_f64(&y, dy, cols, options);
    assert_eq!(got.len(), expected.len());
    let mismatch = reference::first_mismatch(got, &expected, tolerance);
    assert_eq!(mismatch, None, "got {got:?}, expected {expected:?}");
}

#[test]
fn backward_gives_the_softmax_gradient() {
    let data = (&LOGITS_2X4[..], &GRAD_2X4[..]);
    let (header, got) = backward_round_trip("backward", "(2, 4)", data, &[]);
    assert!(header.contains("'shape': (2, 4)"), "{header}");
    assert_gradient_matches(&got, data, 4, &Options::softmax());
}

#[test]
fn backward_with_log_and_temperature_gives_the_log_softmax_gradient() {
    let data = (&LOGITS_2X4[..], &GRAD_2X4[..]);
    let flags = ["--log", "--temperature", "2"];
    let (_, got) = backward_round_trip("backward_log", "(2, 4)", data, &flags);
    let options = Options::log_softmax().with_temperature(2.0);
    assert_gradient_matches(&got, data, 4, &options);
}

#[test]
fn backward_of_one_d_input_stays_one_d() {
    let data = (&LOGITS_2X4[..4], &GRAD_2X4[..4]);
    let (header, got) = backward_round_trip("backward_one_d", "(4,)", data, &[]);
    assert!(header.contains("'shape': (4,)"), "{header}");
    assert_gradient_matches(&got, data, 4, &Options::softmax());
}

#[test]
fn backward_without_grad_is_a_usage_error() {
    let input = f32_file("backward_no_grad", "in.npy", "(2, 4)", &LOGITS_2X4);
    assert_fails(&["--input", input.arg(), "--backward"], 2);
}

#[test]
fn grad_without_backward_is_a_usage_error() {
    let input = f32_file("grad_alone", "in.npy", "(2, 4)", &LOGITS_2X4);
    let dy = f32_file("grad_alone", "grad.npy", "(2, 4)", &GRAD_2X4);
    assert_fails(&["--input", input.arg(), "--grad", dy.arg()], 2);
}

#[test]
fn backward_with_a_mask_is_a_usage_error() {
    let input = f32_file("backward_mask", "in.npy", "(2, 4)", &LOGITS_2X4);
    let dy = f32_file("backward_mask", "grad.npy", "(2, 4)", &GRAD_2X4);
    let args = [
        "--input",
        input.arg(),
        "--backward",
        "--grad",
        dy.arg(),
        "--mask",
        "m.npy",
    ];
    assert_fails(&args, 2);
}

#[test]
fn gradient_of_another_shape_is_an_error() {
    let input = f32_file("grad_shape", "in.npy", "(2, 4)", &LOGITS_2X4);
    let dy = f32_file("grad_shape", "grad.npy", "(4, 2)", &GRAD_2X4);
    assert_fails(
        &["--input", input.arg(), "--backward", "--grad", dy.arg()],
        1,
    );
}

// ---------------------------------------------------------------------------------------
// float16 files

/// `values` rounded to f16: the bits for a file, and their exact f32 values for the
/// reference.
fn to_f16(values: &[f32]) -> (Vec<f16>, Vec<f32>) {
    let bits: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
    let wide = bits.iter().map(|h| h.to_f32()).collect();
    (bits, wide)
}

/// A temp `.npy` file of float16 values of the given shape.
fn f16_file(test: &str, name: &str, shape: &str, values: &[f16]) -> TempFile {
    TempFile::with_contents(test, name, &npy("<f2", shape, &f16_bytes(values)))
}

/// [`round_trip`] of a float16 input file.
fn round_trip_f16(test: &str, shape: &str, values: &[f16], flags: &[&str]) -> (String, Vec<f32>) {
    let input = f16_file(test, "in.npy", shape, values);
    let output = TempFile::new(test, "out.npy");
    let mut args = vec!["--input", input.arg(), "--output", output.arg()];
    args.extend(flags);
    let out = cli(&args);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    read_npy(&output.0)
}

/// Checks a float16 output (widened) against the f64 reference of the widened input,
/// within the f16 storage tolerance.
fn assert_matches_f16(
    got: &[f32],
    input: &[f32],
    cols: usize,
    options: &Options,
    inputs: &HostInputs<'_>,
) {
    let expected = reference::softmax_f64_with(input, cols, options, inputs);
    assert_eq!(got.len(), expected.len());
    let mismatch = reference::first_mismatch(got, &expected, reference::F16_STORAGE);
    assert_eq!(mismatch, None, "got {got:?}, expected {expected:?}");
}

/// A [3, 37] input, rounded to f16: 37 columns fill no vector evenly, the values span
/// about 24 (so some probabilities are below f16's range), and a few are `-inf`.
fn logits_3x37() -> (Vec<f16>, Vec<f32>) {
    let values: Vec<f32> = (0..3 * 37)
        .map(|i| {
            if i % 13 == 5 {
                f32::NEG_INFINITY
            } else {
                ((i * 29) % 67) as f32 * 0.37 - 12.0
            }
        })
        .collect();
    to_f16(&values)
}

/// A [2, 37] float16 mask for [`logits_3x37`], a few entries `-inf`.
fn mask_2x37() -> (Vec<f16>, Vec<f32>) {
    let values: Vec<f32> = (0..2 * 37)
        .map(|i| {
            if i % 7 == 3 {
                f32::NEG_INFINITY
            } else {
                ((i * 5) % 11) as f32 * 0.25 - 1.0
            }
        })
        .collect();
    to_f16(&values)
}

#[test]
fn float16_round_trip_writes_float16_that_matches_the_reference() {
    let (bits, wide) = logits_3x37();
    let none = HostInputs::default();
    let (header, got) = round_trip_f16("f16_round_trip", "(3, 37)", &bits, &[]);
    assert!(header.contains("'descr': '<f2'"), "{header}");
    assert!(header.contains("'shape': (3, 37)"), "{header}");
    assert_matches_f16(&got, &wide, 37, &Options::softmax(), &none);
    assert_eq!(got[5], 0.0, "a -inf logit has probability 0");

    let (header, got) = round_trip_f16("f16_round_trip_log", "(3, 37)", &bits, &["--log"]);
    assert!(header.contains("'descr': '<f2'"), "{header}");
    assert_matches_f16(&got, &wide, 37, &Options::log_softmax(), &none);
    assert_eq!(got[5], f32::NEG_INFINITY, "{got:?}");
}

#[test]
fn float16_one_d_input_stays_one_d() {
    let (bits, wide) = to_f16(&LOGITS[..3]);
    let (header, got) = round_trip_f16("f16_one_d", "(3,)", &bits, &[]);
    assert!(header.contains("'descr': '<f2'"), "{header}");
    assert!(header.contains("'shape': (3,)"), "{header}");
    assert_matches_f16(&got, &wide, 3, &Options::softmax(), &HostInputs::default());
}

#[test]
fn float16_input_without_output_prints_its_dtype() {
    let (bits, _) = to_f16(&LOGITS);
    let input = f16_file("f16_summary", "in.npy", "(2, 3)", &bits);
    let out = cli(&["--input", input.arg()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("shape: 2 x 3"), "{stdout}");
    assert!(stdout.contains("float16 in, float16 out"), "{stdout}");
    assert!(stdout.contains("first row: [0.951"), "{stdout}");
}

#[test]
fn float16_mask_with_a_float32_input() {
    let mask: Vec<f32> = [0.0, f32::NEG_INFINITY, 0.5, 1.0, -2.0]
        .into_iter()
        .chain([-1.0, 0.25, 0.0, f32::NEG_INFINITY, 3.0])
        .collect();
    let (bits, _) = to_f16(&mask);
    let file = f16_file("mask_f16_f32", "mask.npy", "(2, 5)", &bits);
    let flags = ["--mask", file.arg()];
    let (header, got) = round_trip("mask_f16_f32", "(3, 5)", &LOGITS_3X5, &flags);
    assert!(header.contains("'descr': '<f4'"), "{header}");
    let inputs = HostInputs::default().with_mask(&bits, 2);
    assert_matches_reference_with(&got, &LOGITS_3X5, 5, &Options::softmax(), &inputs);
    assert_eq!((got[1], got[8]), (0.0, 0.0), "{got:?}");
    assert_eq!(got[11], 0.0, "row 2 takes mask row 0: {got:?}");
}

#[test]
fn float16_mask_with_a_float16_input() {
    let (bits, wide) = logits_3x37();
    let (mask, _) = mask_2x37();
    let file = f16_file("mask_f16_f16", "mask.npy", "(2, 37)", &mask);
    let flags = ["--mask", file.arg(), "--temperature", "1.5"];
    let (header, got) = round_trip_f16("mask_f16_f16", "(3, 37)", &bits, &flags);
    assert!(header.contains("'descr': '<f2'"), "{header}");
    let inputs = HostInputs::default().with_mask(&mask, 2);
    let options = Options::softmax().with_temperature(1.5);
    assert_matches_f16(&got, &wide, 37, &options, &inputs);
    assert_eq!(got[3], 0.0, "the mask's -inf at row 0, column 3: {got:?}");
}

#[test]
fn float16_input_with_stats_and_a_float16_mask() {
    let (bits, wide) = logits_3x37();
    let (mask, _) = mask_2x37();
    let mask_file = f16_file("f16_stats", "mask.npy", "(2, 37)", &mask);
    let stats = TempFile::new("f16_stats", "stats.npy");
    let flags = ["--stats", stats.arg(), "--mask", mask_file.arg(), "--log"];
    let (header, got) = round_trip_f16("f16_stats", "(3, 37)", &bits, &flags);
    assert!(header.contains("'descr': '<f2'"), "{header}");
    assert!(header.contains("'shape': (3, 37)"), "{header}");
    let inputs = HostInputs::default().with_mask(&mask, 2);
    let options = Options::log_softmax();
    assert_matches_f16(&got, &wide, 37, &options, &inputs);

    let (header, got) = read_npy(&stats.0);
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'shape': (3, 2)"), "{header}");
    let want = reference::row_stats_f64_with(&wide, 37, &options, &inputs);
    assert_eq!(got.len(), 2 * want.len());
    for (g, w) in got.chunks(2).zip(&want) {
        let close = |g: f32, w: f64| (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs());
        assert!(
            close(g[0], w[0]) && close(g[1], w[1]),
            "{got:?} vs {want:?}"
        );
    }
}

#[test]
fn float16_backward_takes_a_float16_or_a_float32_gradient() {
    let (x_bits, x) = to_f16(&LOGITS_2X4);
    let (dy_bits, dy) = to_f16(&GRAD_2X4);
    // The f32 gradient check, widened by the rounding of dx to f16.
    let tolerance = Tolerance {
        abs: reference::BACKWARD_F32.abs + 1e-5 + reference::F16_STORAGE.abs,
        rel: reference::BACKWARD_F32.rel + reference::F16_STORAGE.rel,
    };
    let options = Options::log_softmax().with_temperature(2.0);
    let grads = [
        (
            "f16_backward_f16",
            npy("<f2", "(2, 4)", &f16_bytes(&dy_bits)),
        ),
        ("f16_backward_f32", npy("<f4", "(2, 4)", &f32_bytes(&dy))),
    ];
    for (test, grad) in grads {
        let grad = TempFile::with_contents(test, "grad.npy", &grad);
        let flags = [
            "--backward",
            "--grad",
            grad.arg(),
            "--log",
            "--temperature",
            "2",
        ];
        let (header, got) = round_trip_f16(test, "(2, 4)", &x_bits, &flags);
        assert!(header.contains("'descr': '<f2'"), "{test}: {header}");
        assert!(header.contains("'shape': (2, 4)"), "{test}: {header}");
        assert_gradient_within(&got, (&x, &dy), 4, &options, tolerance);
    }
}

#[test]
fn float16_mask_of_another_width_is_an_error() {
    let (bits, _) = to_f16(&[0.0; 8]);
    let mask = f16_file("mask_f16_width", "mask.npy", "(2, 4)", &bits);
    assert_row_input_refused("mask_f16_width", &["--mask", mask.arg()]);
}

#[test]
fn int32_input_is_refused_by_name() {
    let line = assert_file_refused("i4_input", &npy("<i4", "(2, 3)", &i32_bytes(&[0; 6])));
    assert!(line.contains("int32"), "{line}");
}

#[test]
fn int32_mask_is_refused_by_name() {
    let mask = i32_file("mask_i32", "mask.npy", "(5,)", &[0; 5]);
    let input = f32_file("mask_i32", "in.npy", "(3, 5)", &LOGITS_3X5);
    let line = assert_fails(&["--input", input.arg(), "--mask", mask.arg()], 1);
    assert!(line.contains("--mask") && line.contains("int32"), "{line}");
}

/// The benchmark report, at its smallest: it runs to the end on this adapter and writes
/// its tables, each shape's row with a softmax / copy ratio that is a positive number.
/// Too few rounds to mean anything about speed; this only keeps the report working.
#[test]
fn the_report_runs_and_writes_its_tables() {
    let dir = TempFile::new("report", "out");
    let out = report(&["--cols", "32,1000", "--out", dir.arg()]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let md = std::fs::read_to_string(dir.0.join("report.md")).expect("report.md written");
    assert!(md.contains("timed by "), "the clock is named:\n{md}");
    for shape in ["8192 x 32", "262 x 1000"] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {shape} |")))
            .unwrap_or_else(|| panic!("no row for {shape} in:\n{md}"));
        let ratio: f64 = row.split('|').nth(6).unwrap().trim().parse().unwrap();
        assert!(ratio > 0.0 && ratio.is_finite(), "{row}");
    }
    let csv = std::fs::read_to_string(dir.0.join("report.csv")).expect("report.csv written");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // Scaling: 1 MiB doubling up to four times --size-mib.
    let scaling = std::fs::read_to_string(dir.0.join("scaling.csv")).expect("scaling.csv");
    let sizes: Vec<&str> = scaling
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(sizes, ["1048576", "2097152", "4194304"], "{scaling}");
    std::fs::remove_dir_all(&dir.0).ok();
}

/// The report subcommand run with these arguments (tiny: 1 MiB, one round of one
/// dispatch).
fn report(args: &[&str]) -> Output {
    Command::new(binary())
        .arg("report")
        .args(["--size-mib", "1", "--repeats", "1", "--iters", "1"])
        .args(args)
        .output()
        .expect("the wgpu-softmax binary starts")
}

/// `--versus` prints one row per shape and configuration, says which forced kernel the
/// planner refuses for a shape and measures the rest, and names a bad kernel. One
/// invocation per row of 300000 columns is refused where the driver caps an
/// invocation's loop iterations below what that takes (Mesa's software adapters), and
/// runs where it does not (hardware): the test asks the planner's caps of the adapter
/// the report runs on, which a context picks the same way.
#[test]
fn the_report_compares_kernel_choices() {
    let out = report(&[
        "--cols",
        "256",
        "--versus",
        "planner,thread-row,workgroup-shared:64",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for config in ["planner", "thread-row", "workgroup-shared:64"] {
        let row = format!("| 1024 x 256 | {config} |");
        assert!(stdout.contains(&row), "{stdout}");
    }
    let out = report(&["--cols", "300000", "--versus", "planner,thread-row"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = |config: &str| {
        let start = format!("| 1 x 300000 | {config} |");
        let line = stdout.lines().find(|l| l.starts_with(&start));
        line.unwrap_or_else(|| panic!("no {config} row in:\n{stdout}"))
    };
    let assert_measured = |config: &str| {
        let cell = row(config).split('|').nth(3).unwrap().trim();
        let ratio: f64 = cell
            .parse()
            .unwrap_or_else(|_| panic!("{config}: not measured:\n{stdout}"));
        assert!(ratio > 0.0 && ratio.is_finite(), "{stdout}");
    };
    assert_measured("planner");
    // Thread per row: one invocation sweeps a row's 75000 vec4 loads twice.
    let ctx = block_on(Context::new(ContextOptions::default())).expect("an adapter");
    let needed = plan::loop_iterations(300_000, true, 1);
    let caps = ctx.caps();
    if caps.max_loop_iterations.is_some_and(|cap| needed > cap) {
        assert!(row("thread-row").contains("refused"), "{caps:?}:\n{stdout}");
    } else {
        assert_measured("thread-row");
    }
    let out = report(&["--versus", "no-such-kernel"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown kernel"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Any float .npy: float64, either byte order, C or Fortran order, any rank

/// An `.npy` v1.0 file of `descr`, `fortran_order` and `shape` (Python syntax),
/// followed by `data`.
fn npy_ordered(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    npy_with_header(&dict, data)
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads a float64 (`<f8`) `.npy` v1.0 file the CLI wrote: its header and values.
fn read_npy_f64(path: &Path) -> (String, Vec<f64>) {
    let bytes = std::fs::read(path).expect("the output file exists");
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "magic and version 1.0");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = text(&bytes[10..10 + len]);
    assert_eq!((10 + len) % 64, 0, "data is 64-byte aligned: {header:?}");
    assert!(header.contains("'descr': '<f8'"), "{header:?}");
    let values = bytes[10 + len..]
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    (header, values)
}

/// Runs the CLI on an input file of these bytes and returns the output's path (kept
/// until the returned guard drops).
fn run_file(test: &str, bytes: &[u8], flags: &[&str]) -> TempFile {
    let input = TempFile::with_contents(test, "in.npy", bytes);
    let output = TempFile::new(test, "out.npy");
    let mut args = vec!["--input", input.arg(), "--output", output.arg()];
    args.extend(flags);
    let out = cli(&args);
    assert!(out.status.success(), "{test}: {}", text(&out.stderr));
    output
}

/// The widened f32 values of `values`, as the CLI computes on them.
fn as_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// Logits that float32 cannot hold exactly, so that a float64 file's rounding shows.
const LOGITS_F64: [f64; 6] = [0.1, std::f64::consts::E, -1.0 / 3.0, 1e-3, 7.25, -4.4];

#[test]
fn float64_file_round_trips_as_float64_computed_in_float32() {
    let bytes = npy("<f8", "(2, 3)", &f64_bytes(&LOGITS_F64));
    let output = run_file("f8_round_trip", &bytes, &[]);
    let (header, got) = read_npy_f64(&output.0);
    assert!(header.contains("'shape': (2, 3)"), "{header}");
    // Each value is an f32 result, widened exactly.
    assert!(got.iter().all(|&v| f64::from(v as f32) == v), "{got:?}");
    let got = as_f32(&got);
    assert_matches_reference(&got, &as_f32(&LOGITS_F64), 3, &Options::softmax());
}

#[test]
fn float64_input_without_output_names_its_dtype() {
    let input = TempFile::with_contents(
        "f8_summary",
        "in.npy",
        &npy("<f8", "(2, 3)", &f64_bytes(&[7.0, 4.0, 0.0, 1.0, 1.0, 1.0])),
    );
    let out = cli(&["--input", input.arg()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("float64 in, float64 out"), "{stdout}");
    assert!(stdout.contains("first row: [0.9517"), "{stdout}");
}

#[test]
fn big_endian_files_are_read_and_written_little_endian() {
    let be32: Vec<u8> = LOGITS.iter().flat_map(|v| v.to_be_bytes()).collect();
    let output = run_file("be_f4", &npy(">f4", "(2, 3)", &be32), &[]);
    let (header, got) = read_npy(&output.0);
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert_matches_reference(&got, &LOGITS, 3, &Options::softmax());

    let be64: Vec<u8> = LOGITS_F64.iter().flat_map(|v| v.to_be_bytes()).collect();
    let output = run_file("be_f8", &npy(">f8", "(2, 3)", &be64), &[]);
    let got = as_f32(&read_npy_f64(&output.0).1);
    assert_matches_reference(&got, &as_f32(&LOGITS_F64), 3, &Options::softmax());

    let (bits, wide) = to_f16(&LOGITS);
    let be16: Vec<u8> = bits.iter().flat_map(|v| v.to_be_bytes()).collect();
    let output = run_file("be_f2", &npy(">f2", "(2, 3)", &be16), &[]);
    let (header, got) = read_npy(&output.0);
    assert!(header.contains("'descr': '<f2'"), "{header}");
    assert_matches_f16(&got, &wide, 3, &Options::softmax(), &HostInputs::default());
}

/// A (2, 3, 4) array whose C-order values are `f(i)`, and the same array's bytes in
/// Fortran order (first axis fastest).
fn c_and_fortran_2x3x4() -> (Vec<f32>, Vec<u8>) {
    let c: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 * 0.5 - 2.0).collect();
    let mut fortran = vec![0.0f32; 24];
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                fortran[i + 2 * (j + 3 * k)] = c[(i * 3 + j) * 4 + k];
            }
        }
    }
    (c, f32_bytes(&fortran))
}

#[test]
fn fortran_order_file_gives_what_its_c_order_twin_gives() {
    let (c, fortran) = c_and_fortran_2x3x4();
    let output = run_file(
        "fortran",
        &npy_ordered("<f4", true, "(2, 3, 4)", &fortran),
        &[],
    );
    let (header, got) = read_npy(&output.0);
    assert!(header.contains("'fortran_order': False"), "{header}");
    assert!(header.contains("'shape': (2, 3, 4)"), "{header}");
    assert_matches_reference(&got, &c, 4, &Options::softmax());
    let twin = run_file(
        "fortran_twin",
        &npy("<f4", "(2, 3, 4)", &f32_bytes(&c)),
        &[],
    );
    assert_eq!(
        read_npy(&twin.0).1,
        got,
        "the same rows give the same values"
    );
}

#[test]
fn rank_3_and_rank_4_inputs_keep_their_shape_and_take_the_last_axis() {
    let values: Vec<f32> = (0..48)
        .map(|i| ((i * 5) % 13) as f32 * 0.75 - 4.0)
        .collect();
    for (test, shape, cols) in [("rank_3", "(2, 4, 6)", 6), ("rank_4", "(2, 2, 3, 4)", 4)] {
        let output = run_file(test, &npy("<f4", shape, &f32_bytes(&values)), &["--log"]);
        let (header, got) = read_npy(&output.0);
        assert!(header.contains(&format!("'shape': {shape}")), "{header}");
        assert_matches_reference(&got, &values, cols, &Options::log_softmax());
    }
}

#[test]
fn rank_3_summary_names_the_shape_and_its_rows() {
    let input = f32_file("rank_3_summary", "in.npy", "(2, 1, 3)", &LOGITS);
    let out = cli(&["--input", input.arg()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        stdout.contains("shape: (2, 1, 3) (2 rows of 3;"),
        "{stdout}"
    );
}

/// Causal rows count along the second-to-last axis: each matrix of a (2, 3, 4) input
/// is masked as a (3, 4) input alone would be, and the stats follow.
#[test]
fn rank_3_causal_mask_applies_to_each_matrix() {
    let values: Vec<f32> = LOGITS_3X4.iter().chain(&LOGITS_3X4).copied().collect();
    let stats = TempFile::new("rank_3_causal", "stats.npy");
    let flags = ["--causal-offset", "1", "--stats", stats.arg()];
    let output = run_file(
        "rank_3_causal",
        &npy("<f4", "(2, 3, 4)", &f32_bytes(&values)),
        &flags,
    );
    let (_, got) = read_npy(&output.0);
    let options = Options::softmax().with_causal(1);
    for matrix in got.chunks(12) {
        assert_matches_reference(matrix, &LOGITS_3X4, 4, &options);
    }
    let (header, stats) = read_npy(&stats.0);
    assert!(header.contains("'shape': (2, 3, 2)"), "{header}");
    let want = reference::row_stats_f64_with(&LOGITS_3X4, 4, &options, &HostInputs::default());
    for (g, w) in stats.chunks(2).zip(want.iter().chain(&want)) {
        let close = |g: f32, w: f64| (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs());
        assert!(
            close(g[0], w[0]) && close(g[1], w[1]),
            "{stats:?} vs {want:?}"
        );
    }
}

/// A per-row file may have the input's leading axes as its shape.
#[test]
fn lengths_may_have_the_inputs_leading_axes() {
    let values: Vec<f32> = LOGITS_3X5.iter().chain(&LOGITS_3X5).copied().collect();
    let lengths = i32_file(
        "lengths_leading",
        "lengths.npy",
        "(2, 3)",
        &[2, 5, 1, 3, 4, 0],
    );
    let flags = ["--lengths", lengths.arg(), "--masked-rows", "zero"];
    let bytes = npy("<f4", "(2, 3, 5)", &f32_bytes(&values));
    let (_, got) = read_npy(&run_file("lengths_leading", &bytes, &flags).0);
    let inputs = HostInputs::default().with_lengths(&[2, 5, 1, 3, 4, 0]);
    let options = Options::softmax().with_masked_rows(MaskedRows::Zero);
    assert_matches_reference_with(&got, &values, 5, &options, &inputs);
}

#[test]
fn lengths_of_any_integer_dtype_are_read() {
    let cases: [(&str, Vec<u8>); 3] = [
        ("|i1", vec![2, 5, 9]),
        (
            ">u2",
            [2u16, 5, 9].iter().flat_map(|v| v.to_be_bytes()).collect(),
        ),
        (
            "<u8",
            [2u64, 5, 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ];
    let inputs = HostInputs::default().with_lengths(&[2, 5, 9]);
    for (i, (descr, bytes)) in cases.into_iter().enumerate() {
        let test = format!("lengths_dtype_{i}");
        let lengths = TempFile::with_contents(&test, "lengths.npy", &npy(descr, "(3,)", &bytes));
        let (_, got) = round_trip(&test, "(3, 5)", &LOGITS_3X5, &["--lengths", lengths.arg()]);
        assert_matches_reference_with(&got, &LOGITS_3X5, 5, &Options::softmax(), &inputs);
    }
}

#[test]
fn a_length_past_u32_is_refused() {
    let bytes: Vec<u8> = [1i64, 1 << 32, 2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let lengths =
        TempFile::with_contents("lengths_huge", "lengths.npy", &npy("<i8", "(3,)", &bytes));
    let input = f32_file("lengths_huge", "in.npy", "(3, 5)", &LOGITS_3X5);
    let line = assert_fails(&["--input", input.arg(), "--lengths", lengths.arg()], 1);
    assert!(
        line.contains("row 1") && line.contains("4294967296"),
        "{line}"
    );
}

#[test]
fn float_lengths_are_refused_by_name() {
    let lengths = f32_file("lengths_float", "lengths.npy", "(3,)", &[1.0, 2.0, 3.0]);
    let input = f32_file("lengths_float", "in.npy", "(3, 5)", &LOGITS_3X5);
    let line = assert_fails(&["--input", input.arg(), "--lengths", lengths.arg()], 1);
    assert!(
        line.contains("--lengths") && line.contains("float32"),
        "{line}"
    );
}

#[test]
fn float64_and_float16_temperatures_mask_and_gradient_are_read() {
    let temps = [0.5f32, 1.0, 4.0];
    let be_temps: Vec<u8> = temps
        .iter()
        .flat_map(|&v| f64::from(v).to_be_bytes())
        .collect();
    let temps_f8 = TempFile::with_contents("temps_f8", "temps.npy", &npy(">f8", "(3,)", &be_temps));
    let (bits, _) = to_f16(&temps);
    let temps_f2 = f16_file("temps_f2", "temps.npy", "(3,)", &bits);
    let inputs = HostInputs::default().with_temperatures(&temps);
    for (test, file) in [("temps_f8", &temps_f8), ("temps_f2", &temps_f2)] {
        let (_, got) = round_trip(test, "(3, 5)", &LOGITS_3X5, &["--temperatures", file.arg()]);
        assert_matches_reference_with(&got, &LOGITS_3X5, 5, &Options::softmax(), &inputs);
    }

    let mask = [0.0f32, f32::NEG_INFINITY, 0.5, 1.0, -2.0];
    let mask_f8: Vec<f64> = mask.iter().map(|&v| f64::from(v)).collect();
    let file = TempFile::with_contents(
        "mask_f8",
        "mask.npy",
        &npy("<f8", "(5,)", &f64_bytes(&mask_f8)),
    );
    let (_, got) = round_trip("mask_f8", "(3, 5)", &LOGITS_3X5, &["--mask", file.arg()]);
    let inputs = HostInputs::default().with_mask(&mask, 1);
    assert_matches_reference_with(&got, &LOGITS_3X5, 5, &Options::softmax(), &inputs);

    let dy: Vec<f64> = GRAD_2X4.iter().map(|&v| f64::from(v)).collect();
    let grad = TempFile::with_contents(
        "grad_f8",
        "grad.npy",
        &npy("<f8", "(2, 4)", &f64_bytes(&dy)),
    );
    let flags = ["--backward", "--grad", grad.arg()];
    let (_, got) = round_trip("grad_f8", "(2, 4)", &LOGITS_2X4, &flags);
    assert_gradient_matches(&got, (&LOGITS_2X4, &GRAD_2X4), 4, &Options::softmax());
}

// ---------------------------------------------------------------------------------------
// Refusals: one error line naming what was found, exit status 1

#[test]
fn zero_d_array_is_refused_by_name() {
    let line = assert_file_refused("zero_d", &npy("<f4", "()", &f32_bytes(&[1.0])));
    assert!(line.contains("0-d"), "{line}");
}

#[test]
fn complex_input_is_refused_by_name() {
    let line = assert_file_refused("complex", &npy("<c8", "(2, 3)", &[0; 48]));
    assert!(line.contains("complex64"), "{line}");
}

#[test]
fn structured_input_is_refused_by_name() {
    let dict = "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (3,), }";
    let line = assert_file_refused("structured", &npy_with_header(dict, &[0; 24]));
    assert!(line.contains("structured dtype"), "{line}");
}

/// Axes whose product overflows even u64: refused by the CLI's own checked size (the
/// header reader multiplies unchecked, which only a release build survives without the
/// workspace's overflow-check override for it).
#[test]
fn axes_whose_product_overflows_are_refused() {
    let bytes = npy("<f4", "(1099511627776, 1099511627776)", &[]);
    let line = assert_file_refused("overflowing_shape", &bytes);
    assert!(line.contains("too large"), "{line}");
}

#[test]
fn int64_input_is_refused_by_name() {
    let line = assert_file_refused("i8_input", &npy("<i8", "(2, 3)", &[0; 48]));
    assert!(line.contains("int64"), "{line}");
}

// ---------------------------------------------------------------------------------------
// Outputs appear whole or not at all

/// The files in the temp dir whose names hold `test`'s marker: the outputs and any
/// temporary file left beside them.
fn leftovers(test: &str) -> Vec<String> {
    let marker = format!("wgpu-softmax-cli-{}-{test}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .expect("the temp dir")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.contains(&marker))
        .collect()
}

/// The run computes everything, then cannot put `--output` in place (a directory is
/// there): it fails with one line, `--stats` is not written either, and no temporary
/// file is left beside them.
#[test]
fn a_run_whose_output_fails_leaves_no_file() {
    let input = f32_file("failed_output", "in.npy", "(2, 3)", &LOGITS);
    let dir = TempFile::new("failed_output", "out.npy");
    std::fs::create_dir(&dir.0).expect("a directory where the output should go");
    let stats = TempFile::new("failed_output", "stats.npy");
    let args = [
        "--input",
        input.arg(),
        "--output",
        dir.arg(),
        "--stats",
        stats.arg(),
    ];
    let line = assert_fails(&args, 1);
    assert!(line.contains("--output"), "{line}");
    assert!(!stats.0.exists(), "--stats was written");
    let mut left = leftovers("failed_output");
    left.sort();
    let mut want: Vec<String> = [&input, &dir]
        .iter()
        .map(|f| f.0.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(left, want, "only the input and the directory");
    std::fs::remove_dir(&dir.0).expect("the directory is still empty");
}

#[test]
fn an_output_in_a_missing_directory_is_refused_before_the_run() {
    let input = f32_file("missing_dir", "in.npy", "(2, 3)", &LOGITS);
    let output = std::env::temp_dir()
        .join("wgpu-softmax-no-such-dir")
        .join("out.npy");
    let line = assert_fails(
        &["--input", input.arg(), "--output", output.to_str().unwrap()],
        1,
    );
    assert!(line.contains("--output"), "{line}");
    assert!(!output.exists());
}

// ---------------------------------------------------------------------------------------
// Files larger than memory: blocks of rows

/// 40 rows of 9000 columns with `--max-gpu-mib 1` go through in blocks of 7 rows
/// (256 KiB of f32 rows), starting at rows 0, 7, ..., 35: the causal offset moves with
/// each block, per-row lengths and temperatures are sliced, and the mask rows are
/// rotated (a 3-row mask: each block starts at mask row 0, 1 or 2) or wrapped (a
/// 10-row mask, more rows than a block: the block at row 7 takes mask rows 7, 8, 9, 0,
/// 1, 2, 3). The result and the stats match the f64 reference and a run in one block.
#[test]
fn streamed_blocks_agree_with_one_whole_run() {
    let (rows, cols) = (40usize, 9000usize);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 5.0)
        .collect();
    let lengths: Vec<i32> = (0..rows as i32).map(|r| 8000 - 150 * r).collect();
    let temps: Vec<f32> = (0..rows).map(|r| 0.5 + (r % 5) as f32 * 0.25).collect();
    let test = "streamed";
    let input = f32_file(test, "in.npy", &format!("({rows}, {cols})"), &x);
    let lengths_file = i32_file(test, "lengths.npy", &format!("({rows},)"), &lengths);
    let temps_file = f32_file(test, "temps.npy", &format!("({rows},)"), &temps);
    for mask_rows in [3, 10] {
        let mask: Vec<f32> = (0..mask_rows * cols)
            .map(|i| match i % 17 {
                0 => f32::NEG_INFINITY,
                k => k as f32 * 0.05,
            })
            .collect();
        let shape = format!("({mask_rows}, {cols})");
        let mask_file = f32_file(test, &format!("mask{mask_rows}.npy"), &shape, &mask);
        let run = |name: &str, budget: &[&str]| {
            let output = TempFile::new(test, &format!("{name}-out.npy"));
            let stats = TempFile::new(test, &format!("{name}-stats.npy"));
            let mut args = vec![
                "--input",
                input.arg(),
                "--output",
                output.arg(),
                "--stats",
                stats.arg(),
                "--mask",
                mask_file.arg(),
                "--lengths",
                lengths_file.arg(),
                "--temperatures",
                temps_file.arg(),
                "--causal-offset",
                "7000",
            ];
            args.extend(budget);
            let out = cli(&args);
            assert!(out.status.success(), "{name}: {}", text(&out.stderr));
            (read_npy(&output.0).1, read_npy(&stats.0).1)
        };
        let (blocks, block_stats) = run("blocks", &["--max-gpu-mib", "1"]);
        let (whole, whole_stats) = run("whole", &[]);

        let lengths: Vec<u32> = lengths.iter().map(|&n| n as u32).collect();
        let inputs = HostInputs::default()
            .with_mask(&mask, mask_rows)
            .with_lengths(&lengths)
            .with_temperatures(&temps);
        let options = Options::softmax().with_causal(7000);
        assert_matches_reference_with(&blocks, &x, cols, &options, &inputs);
        let want = reference::row_stats_f64_with(&x, cols, &options, &inputs);
        assert_eq!(block_stats.len(), 2 * want.len());
        for (g, w) in block_stats.chunks(2).zip(&want) {
            let close = |g: f32, w: f64| (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs());
            assert!(close(g[0], w[0]) && close(g[1], w[1]), "{g:?} vs {w:?}");
        }
        let differ = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        };
        let worst = differ(&blocks, &whole);
        assert!(
            worst <= 1e-7,
            "{mask_rows}-row mask: blocks and one run differ by {worst}"
        );
        let worst = differ(&block_stats, &whole_stats);
        assert!(
            worst <= 1e-5,
            "{mask_rows}-row mask: stats differ by {worst}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The command line

#[test]
fn version_flag_prints_the_version() {
    let out = cli(&["--version"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let want = format!("wgpu-softmax {}", env!("CARGO_PKG_VERSION"));
    assert!(stdout.contains(&want), "{stdout}");
    assert!(out.stderr.is_empty());
}

#[test]
fn equals_forms_and_short_flags_work_as_the_long_ones() {
    let input = f32_file("equals", "in.npy", "(2, 3)", &LOGITS);
    let output = TempFile::new("equals", "out.npy");
    let forms = [
        vec![
            format!("--input={}", input.arg()),
            format!("--output={}", output.arg()),
        ],
        vec![
            "-i".into(),
            input.arg().into(),
            "-o".into(),
            output.arg().into(),
            "-q".into(),
        ],
    ];
    for args in forms {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--temperature=3", "-l"]);
        let out = cli(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let options = Options::log_softmax().with_temperature(3.0);
        assert_matches_reference(&read_npy(&output.0).1, &LOGITS, 3, &options);
    }
}

#[test]
fn report_subcommand_refuses_a_bad_flag_as_a_usage_error() {
    let out = Command::new(binary())
        .args(["report", "--iters", "0"])
        .output()
        .expect("the wgpu-softmax binary starts");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("--iters"),
        "{stderr}"
    );
}

/// Reads an int64 (`<i8`) `.npy` file the CLI wrote: its header and values.
fn read_npy_i64(path: &Path) -> (String, Vec<i64>) {
    let bytes = std::fs::read(path).expect("the output file exists");
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "magic and version 1.0");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = text(&bytes[10..10 + len]);
    assert_eq!((10 + len) % 64, 0, "data is 64-byte aligned: {header:?}");
    assert!(header.contains("'descr': '<i8'"), "{header:?}");
    let values = bytes[10 + len..]
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (header, values)
}

#[test]
fn sample_writes_int64_ids_of_the_leading_shape_and_their_log_probs() {
    // Two matrices of 3 rows of 4: greedy picks each row's max; a -inf row gives -1.
    let ninf = f32::NEG_INFINITY;
    let values = [
        1.0, 5.0, 2.0, 0.0, //
        9.0, 1.0, 9.0, 0.0, // tie: the lowest column
        ninf, ninf, ninf, ninf, //
        0.0, 0.0, 0.0, 3.0, //
        2.0, 8.0, 1.0, 1.0, //
        1.0, 1.0, 7.0, 1.0,
    ];
    let test = "sample-greedy";
    let input = TempFile::with_contents(
        test,
        "in.npy",
        &npy("<f4", "(2, 3, 4)", &f32_bytes(&values)),
    );
    let ids = TempFile::new(test, "ids.npy");
    let lp = TempFile::new(test, "lp.npy");
    let out = cli(&[
        "--input",
        input.arg(),
        "--sample",
        "--top-k",
        "1",
        "--output",
        ids.arg(),
        "--logprobs",
        lp.arg(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (header, got) = read_npy_i64(&ids.0);
    assert!(header.contains("'shape': (2, 3)"), "{header}");
    assert_eq!(got, [1, 0, -1, 3, 1, 2]);
    let (header, lps) = read_npy(&lp.0);
    assert!(header.contains("'shape': (2, 3)"), "{header}");
    let log = reference::softmax_f64(&values, 4, &Options::log_softmax());
    for (r, &id) in got.iter().enumerate() {
        if id < 0 {
            assert!(lps[r].is_nan(), "row {r}");
        } else {
            let want = log[r * 4 + id as usize];
            assert!(
                Tolerance::for_op(wgpu_softmax::Op::LogSoftmax).accepts(lps[r], want),
                "row {r}"
            );
        }
    }
}

#[test]
fn sample_is_seeded_reproducible_and_independent_of_the_block_size() {
    let (rows, cols) = (64, 300);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 150.0)
        .collect();
    let test = "sample-seeded";
    let input = TempFile::with_contents(
        test,
        "in.npy",
        &npy("<f4", &format!("({rows}, {cols})"), &f32_bytes(&values)),
    );
    let draw = |name: &str, extra: &[&str]| {
        let ids = TempFile::new(test, name);
        let mut args = vec![
            "--input",
            input.arg(),
            "--sample",
            "--top-p",
            "0.9",
            "--output",
            ids.arg(),
        ];
        args.extend(extra);
        let out = cli(&args);
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        read_npy_i64(&ids.0).1
    };
    let a = draw("a.npy", &["--seed", "7"]);
    assert_eq!(a, draw("b.npy", &["--seed", "7"]));
    // --max-gpu-mib 1 reads blocks of 65536 bytes: 54 rows, so two blocks.
    assert_eq!(a, draw("c.npy", &["--seed", "7", "--max-gpu-mib", "1"]));
    assert_ne!(a, draw("d.npy", &["--seed", "8"]));
    // Every id survives top-p 0.9 of its row.
    let s = wgpu_softmax::Sampling::new(7).with_top_p(0.9);
    let kept = reference::sample_filter_f64(
        &values,
        cols,
        &Options::softmax(),
        &HostInputs::default(),
        &s,
    );
    for (r, &id) in a.iter().enumerate() {
        assert!(
            kept[r].as_ref().unwrap()[id as usize] > 0.0,
            "row {r}: {id}"
        );
    }
}

#[test]
fn sample_takes_the_row_inputs_and_never_draws_a_masked_column() {
    let (rows, cols): (usize, usize) = (40, 8);
    let values: Vec<f32> = (0..rows * cols).map(|i| (i % 5) as f32).collect();
    // Columns 4 (the largest logits) masked out everywhere, by the mask.
    let mask: Vec<f32> = (0..cols)
        .map(|c| if c == 4 { f32::NEG_INFINITY } else { 0.0 })
        .collect();
    let lengths: Vec<i32> = (0..rows as i32).map(|r| 1 + r % 8).collect();
    let test = "sample-inputs";
    let input = TempFile::with_contents(
        test,
        "in.npy",
        &npy("<f4", &format!("({rows}, {cols})"), &f32_bytes(&values)),
    );
    let m = TempFile::with_contents(
        test,
        "m.npy",
        &npy("<f4", &format!("({cols},)"), &f32_bytes(&mask)),
    );
    let l = TempFile::with_contents(
        test,
        "l.npy",
        &npy("<i4", &format!("({rows},)"), &i32_bytes(&lengths)),
    );
    let ids = TempFile::new(test, "ids.npy");
    let out = cli(&[
        "--input",
        input.arg(),
        "--sample",
        "--mask",
        m.arg(),
        "--lengths",
        l.arg(),
        "--causal",
        "--temperature",
        "0.5",
        "--output",
        ids.arg(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (_, got) = read_npy_i64(&ids.0);
    for (r, &id) in got.iter().enumerate() {
        let cap = (lengths[r] as usize).min(r + 1);
        let allowed = (0..cap).any(|c| c != 4);
        if allowed {
            assert!(id >= 0 && (id as usize) < cap && id != 4, "row {r}: {id}");
        } else {
            assert_eq!(id, -1, "row {r}");
        }
    }
}

#[test]
fn sample_without_output_prints_the_first_ids() {
    let input = TempFile::with_contents(
        "sample-summary",
        "in.npy",
        &npy("<f4", "(2, 3)", &f32_bytes(&LOGITS)),
    );
    let out = cli(&["--input", input.arg(), "--sample", "--top-k", "1"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ids, first rows: [0, 0]"), "{stdout}");
}

#[test]
fn sample_flags_out_of_place_are_usage_errors() {
    assert!(assert_fails(&["--top-k", "3"], 2).contains("--top-k needs --sample"));
    assert!(assert_fails(&["--sample"], 2).contains("--sample needs --input"));
    assert!(assert_fails(&["--input", "x.npy", "--sample", "--log"], 2)
        .contains("--sample does not take --log"));
    assert!(assert_fails(&["--input", "x.npy", "--sample", "--top-p", "0"], 2).contains("top-p"));
    assert!(assert_fails(&["--input", "x.npy", "--sample", "--min-p", "2"], 2).contains("min-p"));
    assert!(
        assert_fails(&["--input", "x.npy", "--sample", "--top-k", "0"], 2).contains("at least 1")
    );
    assert!(
        assert_fails(&["--input", "x.npy", "--logprobs", "lp.npy"], 2).contains("needs --sample")
    );
}

#[test]
fn softcap_flag_caps_the_logits_before_the_temperature() {
    let values = [1e4f32, -1e4, 3.0, 0.0, 50.0, -7.0];
    let (_, got) = round_trip(
        "softcap",
        "(2, 3)",
        &values,
        &["--softcap", "30", "--temperature", "2"],
    );
    let options = Options::softmax().with_softcap(30.0).with_temperature(2.0);
    assert_matches_reference(&got, &values, 3, &options);
    assert!(assert_fails(&["--softcap", "0"], 2).contains("finite and > 0"));
    // --backward differentiates through the cap.
    let dy: Vec<f32> = vec![0.5, -1.0, 2.0, 1.0, 0.0, -0.5];
    let test = "softcap-backward";
    let input = TempFile::with_contents(test, "x.npy", &npy("<f4", "(2, 3)", &f32_bytes(&values)));
    let grad = TempFile::with_contents(test, "dy.npy", &npy("<f4", "(2, 3)", &f32_bytes(&dy)));
    let dx = TempFile::new(test, "dx.npy");
    let out = cli(&[
        "--input",
        input.arg(),
        "--backward",
        "--grad",
        grad.arg(),
        "--softcap",
        "30",
        "--temperature",
        "2",
        "--output",
        dx.arg(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (_, got) = read_npy(&dx.0);
    let y: Vec<f32> = reference::softmax_f64(&values, 3, &options)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let plain = reference::backward_f64(&y, &dy, 3, &options);
    for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
        let t = (f64::from(values[i]) / 30.0).tanh();
        let want = p * (1.0 - t * t);
        assert!(
            (f64::from(*g) - want).abs() <= 1e-5 + 1e-4 * want.abs(),
            "{i}: {g} vs {want}"
        );
    }
}

/// Reads a float32 `.npy` the CLI wrote, with its header.
fn read_f32_npy(path: &Path) -> (String, Vec<f32>) {
    read_npy(path)
}

#[test]
fn cross_entropy_writes_losses_and_the_gradient_as_pytorch_reduces() {
    let (rows, cols) = (6, 5);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37) % 17) as f32 / 4.0 - 2.0)
        .collect();
    let targets: Vec<i64> = vec![0, 4, -100, 2, 3, 1];
    let test = "ce";
    let input = TempFile::with_contents(
        test,
        "in.npy",
        &npy("<f4", &format!("({rows}, {cols})"), &f32_bytes(&values)),
    );
    let t_bytes: Vec<u8> = targets.iter().flat_map(|t| t.to_le_bytes()).collect();
    let t = TempFile::with_contents(test, "t.npy", &npy("<i8", &format!("({rows},)"), &t_bytes));
    let options = Options::softmax().with_temperature(0.9);
    let ce = wgpu_softmax::CrossEntropy::default().with_label_smoothing(0.1);
    let (want_losses, want_grad) = reference::cross_entropy_f64(
        &values,
        cols,
        &targets,
        &options,
        &HostInputs::default(),
        &ce,
        1.0 / 5.0,
    );
    // --reduction none: one loss per row.
    let loss = TempFile::new(test, "loss.npy");
    let grad = TempFile::new(test, "grad.npy");
    let out = cli(&[
        "--input",
        input.arg(),
        "--cross-entropy",
        "--targets",
        t.arg(),
        "--reduction",
        "none",
        "--label-smoothing",
        "0.1",
        "--temperature",
        "0.9",
        "--output",
        loss.arg(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (header, got) = read_f32_npy(&loss.0);
    assert!(header.contains(&format!("'shape': ({rows},)")), "{header}");
    for (g, w) in got.iter().zip(&want_losses) {
        assert!(
            (f64::from(*g) - w).abs() < 1e-5 * (1.0 + w.abs()),
            "{g} vs {w}"
        );
    }
    // Mean (the default) over the 5 rows not ignored, a 0-d file, and the gradient.
    let out = cli(&[
        "--input",
        input.arg(),
        "--cross-entropy",
        "--targets",
        t.arg(),
        "--label-smoothing",
        "0.1",
        "--temperature",
        "0.9",
        "--output",
        loss.arg(),
        "--grad",
        grad.arg(),
        "--max-gpu-mib",
        "1",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (header, got) = read_f32_npy(&loss.0);
    assert!(header.contains("'shape': ()"), "{header}");
    let mean: f64 = want_losses.iter().sum::<f64>() / 5.0;
    assert!(
        (f64::from(got[0]) - mean).abs() < 1e-5,
        "{} vs {mean}",
        got[0]
    );
    let (header, g) = read_f32_npy(&grad.0);
    assert!(
        header.contains(&format!("'shape': ({rows}, {cols})")),
        "{header}"
    );
    for (i, (a, b)) in g.iter().zip(&want_grad).enumerate() {
        assert!(
            (f64::from(*a) - b).abs() < 1e-6 + 1e-4 * b.abs(),
            "element {i}: {a} vs {b}"
        );
    }
    // Without --output: the loss on stdout.
    let out = cli(&[
        "--input",
        input.arg(),
        "--cross-entropy",
        "--targets",
        t.arg(),
        "--reduction",
        "sum",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("loss (sum): "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn cross_entropy_refuses_bad_targets_and_flags_out_of_place() {
    let test = "ce-bad";
    let input = TempFile::with_contents(test, "in.npy", &npy("<f4", "(2, 3)", &f32_bytes(&LOGITS)));
    let t = TempFile::with_contents(test, "t.npy", &npy("<i4", "(2,)", &i32_bytes(&[0, 3])));
    let line = assert_fails(
        &[
            "--input",
            input.arg(),
            "--cross-entropy",
            "--targets",
            t.arg(),
        ],
        1,
    );
    assert!(line.contains("row 1: target 3"), "{line}");
    assert!(assert_fails(&["--targets", "t.npy"], 2).contains("--targets needs --cross-entropy"));
    assert!(assert_fails(&["--input", "x.npy", "--cross-entropy"], 2).contains("--targets"));
    assert!(assert_fails(
        &[
            "--input",
            "x.npy",
            "--cross-entropy",
            "--targets",
            "t.npy",
            "--log"
        ],
        2
    )
    .contains("does not take --log"));
    assert!(assert_fails(
        &[
            "--input",
            "x.npy",
            "--cross-entropy",
            "--targets",
            "t.npy",
            "--label-smoothing",
            "2"
        ],
        2
    )
    .contains("label smoothing"));
    assert!(assert_fails(&["--grad", "g.npy"], 2).contains("--grad needs --backward"));
}

#[test]
fn gather_writes_log_probabilities_at_the_indices() {
    let test = "gather";
    let input = TempFile::with_contents(test, "in.npy", &npy("<f4", "(2, 3)", &f32_bytes(&LOGITS)));
    let ids = TempFile::with_contents(
        test,
        "ids.npy",
        &npy("<i4", "(2, 2)", &i32_bytes(&[0, 2, 1, 1])),
    );
    let lp = TempFile::new(test, "lp.npy");
    let out = cli(&[
        "--input",
        input.arg(),
        "--gather",
        ids.arg(),
        "--output",
        lp.arg(),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (header, got) = read_f32_npy(&lp.0);
    assert!(header.contains("'shape': (2, 2)"), "{header}");
    let log = reference::softmax_f64(&LOGITS, 3, &Options::log_softmax());
    for (i, (r, c)) in [(0, 0), (0, 2), (1, 1), (1, 1)].into_iter().enumerate() {
        let want = log[r * 3 + c];
        assert!(
            (f64::from(got[i]) - want).abs() < 1e-5 * (1.0 + want.abs()),
            "{i}: {} vs {want}",
            got[i]
        );
    }
    let bad = TempFile::with_contents(test, "bad.npy", &npy("<i4", "(2, 1)", &i32_bytes(&[0, 9])));
    let line = assert_fails(&["--input", input.arg(), "--gather", bad.arg()], 1);
    assert!(line.contains("index 9"), "{line}");
}
