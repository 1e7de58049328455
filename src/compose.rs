//! Shader variants and the small preprocessor that composes them from `shaders/`.
//!
//! Every kernel is one file in `shaders/`; what kernels share lives in `shaders/common/`.
//! A [`Variant`] names one compiled module: the kernel's shader, the input's and the
//! output's storage width, whether it has the row inputs, how it reads the mask, and its
//! register-cache slots. [`Variant::all`] is the one list of every variant the planner
//! can ask for; a test composes and validates each with naga, with no GPU. Everything
//! else that varies (log-softmax, vec4 access, workgroup size, statistics, causal mask,
//! f16 against bf16, which row inputs) is a WGSL `override` constant set when the
//! pipeline is made.
//!
//! The preprocessor reads directives, each alone on its line (indentation allowed);
//! every other line is WGSL, copied as it is:
//!
//! - `#import NAME`: the text of `shaders/common/NAME.wgsl`, itself composed; a file
//!   already imported into the module is not imported again.
//! - `#if FLAG`, `#elif FLAG`, `#else`, `#endif`: keep the lines of the first branch
//!   whose flag the variant sets ([`Variant::flag`]); they nest.
//! - `#const NAME`: declares `const NAME: u32 = <n>u;` with the variant's number
//!   ([`Variant::number`]).
//! - `#unroll K NAME` ... `#end_unroll`: the lines between, once for each `K` in
//!   `0..n` (`n` the variant's number `NAME`), each copy a block that begins with
//!   `let K = <i>u;`. The register cache's loops are written out this way, so that its
//!   private array is only ever indexed by constants and a pipeline whose rows are not
//!   cached has no cache code at all.
//!
//! An unknown directive, flag, number or file is an error, which the variant test
//! reports for every variant.

use crate::plan::RowKernel;

/// One compiled WGSL entry point: its file in `shaders/` and its entry point share the
/// name. A [`RowKernel`] runs one shader, or two for split rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shader {
    /// `softmax_thread_row`.
    ThreadRow,
    /// `softmax_subgroup_row`.
    SubgroupRow,
    /// `softmax_workgroup_shared`.
    WorkgroupShared,
    /// `softmax_workgroup_subgroup`.
    WorkgroupSubgroup,
    /// `softmax_split_stats`.
    SplitStats,
    /// `softmax_split_write`.
    SplitWrite,
    /// `softmax_backward`.
    Backward,
    /// `softmax_sample`.
    Sample,
    /// `softmax_sample_part`: a sweep of the sampler over one part of a split row.
    SamplePart,
    /// `softmax_sample_fold`: folds the parts' sweeps of a split row.
    SampleFold,
    /// `softmax_cross_entropy`.
    CrossEntropy,
}

impl Shader {
    /// Every shader.
    pub const ALL: [Shader; 11] = [
        Shader::ThreadRow,
        Shader::SubgroupRow,
        Shader::WorkgroupShared,
        Shader::WorkgroupSubgroup,
        Shader::SplitStats,
        Shader::SplitWrite,
        Shader::Backward,
        Shader::Sample,
        Shader::SamplePart,
        Shader::SampleFold,
        Shader::CrossEntropy,
    ];

    /// The entry point, which is also the file name and pipeline label.
    pub fn entry_point(self) -> &'static str {
        match self {
            Shader::ThreadRow => "softmax_thread_row",
            Shader::SubgroupRow => "softmax_subgroup_row",
            Shader::WorkgroupShared => "softmax_workgroup_shared",
            Shader::WorkgroupSubgroup => "softmax_workgroup_subgroup",
            Shader::SplitStats => "softmax_split_stats",
            Shader::SplitWrite => "softmax_split_write",
            Shader::Backward => "softmax_backward",
            Shader::Sample => "softmax_sample",
            Shader::SamplePart => "softmax_sample_part",
            Shader::SampleFold => "softmax_sample_fold",
            Shader::CrossEntropy => "softmax_cross_entropy",
        }
    }

    /// The shader's own file.
    fn file(self) -> &'static str {
        match self {
            Shader::ThreadRow => include_str!("../shaders/softmax_thread_row.wgsl"),
            Shader::SubgroupRow => include_str!("../shaders/softmax_subgroup_row.wgsl"),
            Shader::WorkgroupShared => include_str!("../shaders/softmax_workgroup_shared.wgsl"),
            Shader::WorkgroupSubgroup => {
                include_str!("../shaders/softmax_workgroup_subgroup.wgsl")
            }
            Shader::SplitStats => include_str!("../shaders/softmax_split_stats.wgsl"),
            Shader::SplitWrite => include_str!("../shaders/softmax_split_write.wgsl"),
            Shader::Backward => include_str!("../shaders/softmax_backward.wgsl"),
            Shader::Sample => include_str!("../shaders/softmax_sample.wgsl"),
            Shader::SamplePart => include_str!("../shaders/softmax_sample_part.wgsl"),
            Shader::SampleFold => include_str!("../shaders/softmax_sample_fold.wgsl"),
            Shader::CrossEntropy => include_str!("../shaders/softmax_cross_entropy.wgsl"),
        }
    }

    /// The storage bindings past the row inputs it declares: 10 and 11 (targets and
    /// losses) for the cross-entropy, 10 (the logits, for a soft-cap's slope) for the
    /// backward pass.
    pub fn extra_bindings(self) -> &'static [u32] {
        match self {
            Shader::CrossEntropy => &[10, 11],
            Shader::Backward => &[10],
            _ => &[],
        }
    }

    /// Whether it uses subgroup operations (`Features::SUBGROUP`).
    pub fn needs_subgroups(self) -> bool {
        matches!(self, Shader::SubgroupRow | Shader::WorkgroupSubgroup)
    }

    /// Whether its output is a matrix like its input (every shader but the sampler's,
    /// which write a column and a log-probability per row; the cross-entropy's output is
    /// its gradient).
    pub fn writes_rows(self) -> bool {
        !self.samples()
    }

    /// Whether it is one of the sampler's shaders.
    pub fn samples(self) -> bool {
        matches!(
            self,
            Shader::Sample | Shader::SamplePart | Shader::SampleFold
        )
    }

    /// Whether it keeps rows in the register cache (the others sweep, or, for the
    /// backward pass, read `y` and `dy` in one sweep each).
    pub fn caches_rows(self) -> bool {
        matches!(
            self,
            Shader::ThreadRow
                | Shader::SubgroupRow
                | Shader::WorkgroupShared
                | Shader::WorkgroupSubgroup
        )
    }

    /// The shaders a kernel runs, in order.
    pub fn of_kernel(kernel: RowKernel) -> &'static [Shader] {
        match kernel {
            RowKernel::ThreadPerRow => &[Shader::ThreadRow],
            RowKernel::SubgroupPerRow => &[Shader::SubgroupRow],
            RowKernel::WorkgroupShared => &[Shader::WorkgroupShared],
            RowKernel::WorkgroupSubgroup => &[Shader::WorkgroupSubgroup],
            RowKernel::SplitRow => &[Shader::SplitStats, Shader::SplitWrite],
        }
    }
}

/// The files `#import` can name: `shaders/common/NAME.wgsl`.
const COMMON: [(&str, &str); 16] = [
    (
        "workgroup_uniform",
        include_str!("../shaders/common/workgroup_uniform.wgsl"),
    ),
    (
        "row_common",
        include_str!("../shaders/common/row_common.wgsl"),
    ),
    (
        "softmax_common",
        include_str!("../shaders/common/softmax_common.wgsl"),
    ),
    ("half", include_str!("../shaders/common/half.wgsl")),
    ("src_f32", include_str!("../shaders/common/src_f32.wgsl")),
    ("src_half", include_str!("../shaders/common/src_half.wgsl")),
    ("dst_f32", include_str!("../shaders/common/dst_f32.wgsl")),
    ("dst_half", include_str!("../shaders/common/dst_half.wgsl")),
    (
        "row_inputs",
        include_str!("../shaders/common/row_inputs.wgsl"),
    ),
    (
        "row_inputs_none",
        include_str!("../shaders/common/row_inputs_none.wgsl"),
    ),
    (
        "mask_words",
        include_str!("../shaders/common/mask_words.wgsl"),
    ),
    (
        "mask_vec4",
        include_str!("../shaders/common/mask_vec4.wgsl"),
    ),
    (
        "mask_vec4_half",
        include_str!("../shaders/common/mask_vec4_half.wgsl"),
    ),
    (
        "sample_common",
        include_str!("../shaders/common/sample_common.wgsl"),
    ),
    (
        "sample_split",
        include_str!("../shaders/common/sample_split.wgsl"),
    ),
    (
        "workgroup_tree",
        include_str!("../shaders/common/workgroup_tree.wgsl"),
    ),
];

/// How a kernel with row inputs reads the mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskRead {
    /// As `u32` words: any offset and row length (`mask_words.wgsl`).
    Words,
    /// An f32 mask whose rows start on four-element boundaries, a `vec4` at a time
    /// (`mask_vec4.wgsl`).
    Vec4F32,
    /// A 16-bit mask whose rows start on four-element boundaries, two words at a time
    /// (`mask_vec4_half.wgsl`).
    Vec4Half,
}

/// Register-cache slot counts the planner gives a pipeline (see `plan::cache_slots`):
/// 0 (rows swept), 1, 2, 4, then multiples of 4 up to the largest cache.
pub fn cache_slot_counts() -> impl Iterator<Item = u32> {
    let largest = crate::plan::MAX_CACHE_VEC4 as u32;
    [0, 1, 2].into_iter().chain((4..=largest).step_by(4))
}

/// One compiled module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The kernel's shader.
    pub shader: Shader,
    /// The input is 16-bit (f16 or bf16; an override constant tells them apart).
    pub src_half: bool,
    /// The output is 16-bit.
    pub dst_half: bool,
    /// How the mask is read, for a module with the row inputs (mask, lengths,
    /// temperatures: three more bindings); `None` for a module without them.
    pub row_inputs: Option<MaskRead>,
    /// Register-cache slots per invocation; 0 for shaders that do not cache.
    pub cache_slots: u32,
}

impl Variant {
    /// The plain variant of a shader: f32 in and out, no row inputs, no cache.
    pub fn plain(shader: Shader) -> Self {
        Variant {
            shader,
            src_half: false,
            dst_half: false,
            row_inputs: None,
            cache_slots: 0,
        }
    }

    /// Every variant the planner can ask for.
    pub fn all() -> Vec<Variant> {
        let mut all = Vec::new();
        for shader in Shader::ALL {
            let slots: Vec<u32> = if shader.caches_rows() {
                cache_slot_counts().collect()
            } else {
                vec![0]
            };
            // The sampler's outputs are its own (ids and log-probabilities in f32).
            let dst_halves: &[bool] = if shader.writes_rows() {
                &[false, true]
            } else {
                &[false]
            };
            for src_half in [false, true] {
                for &dst_half in dst_halves {
                    for row_inputs in [
                        None,
                        Some(MaskRead::Words),
                        Some(MaskRead::Vec4F32),
                        Some(MaskRead::Vec4Half),
                    ] {
                        for &cache_slots in &slots {
                            all.push(Variant {
                                shader,
                                src_half,
                                dst_half,
                                row_inputs,
                                cache_slots,
                            });
                        }
                    }
                }
            }
        }
        all
    }

    /// The boolean flags `#if` tests.
    pub fn flag(&self, name: &str) -> Option<bool> {
        Some(match name {
            "SRC_HALF" => self.src_half,
            "DST_HALF" => self.dst_half,
            "ROW_INPUTS" => self.row_inputs.is_some(),
            // The split sampler's scratch is u32 words (row_common.wgsl).
            "SAMPLE_SPLIT" => matches!(self.shader, Shader::SamplePart | Shader::SampleFold),
            "MASK_WORDS" => self.row_inputs == Some(MaskRead::Words),
            "MASK_VEC4" => self.row_inputs == Some(MaskRead::Vec4F32),
            "MASK_VEC4_HALF" => self.row_inputs == Some(MaskRead::Vec4Half),
            _ => return None,
        })
    }

    /// The numbers `#const` and `#unroll` name.
    pub fn number(&self, name: &str) -> Option<u32> {
        match name {
            "CACHE_SLOTS" => Some(self.cache_slots),
            _ => None,
        }
    }

    /// The composed WGSL source of the module.
    pub fn source(&self) -> Result<String, String> {
        let mut out = String::new();
        let mut imported = Vec::new();
        self.compose(
            self.shader.entry_point(),
            self.shader.file(),
            &mut imported,
            &mut out,
        )?;
        Ok(out)
    }

    fn compose(
        &self,
        name: &str,
        text: &str,
        imported: &mut Vec<String>,
        out: &mut String,
    ) -> Result<(), String> {
        let at = |line: usize, what: String| format!("{name}.wgsl:{}: {what}", line + 1);
        // Each open #if: (whether its branch is kept, whether a branch was taken).
        let mut open: Vec<(bool, bool)> = Vec::new();
        let keeping = |open: &Vec<(bool, bool)>| open.iter().all(|&(keep, _)| keep);
        // An open #unroll: its variable, count, and the lines gathered.
        let mut unroll: Option<(String, u32, String)> = None;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            let mut words = trimmed.split_whitespace();
            let directive = trimmed.starts_with('#').then(|| words.next()).flatten();
            let arg = words.next();
            let flag = |name: Option<&str>| {
                let name = name.ok_or_else(|| at(i, "a flag is missing".into()))?;
                self.flag(name)
                    .ok_or_else(|| at(i, format!("unknown flag {name}")))
            };
            match directive {
                Some("#if") => {
                    let keep = flag(arg)?;
                    open.push((keep, keep));
                }
                Some("#elif") => {
                    let value = flag(arg)?;
                    let (keep, taken) = open
                        .last_mut()
                        .ok_or_else(|| at(i, "#elif without #if".into()))?;
                    *keep = !*taken && value;
                    *taken |= value;
                }
                Some("#else") => {
                    let (keep, taken) = open
                        .last_mut()
                        .ok_or_else(|| at(i, "#else without #if".into()))?;
                    *keep = !*taken;
                    *taken = true;
                }
                Some("#endif") => {
                    open.pop()
                        .ok_or_else(|| at(i, "#endif without #if".into()))?;
                }
                _ if !keeping(&open) => {}
                Some("#import") => {
                    let file = arg.ok_or_else(|| at(i, "#import names no file".into()))?;
                    if imported.iter().any(|f| f == file) {
                        continue;
                    }
                    let (_, text) = COMMON
                        .iter()
                        .find(|(n, _)| *n == file)
                        .ok_or_else(|| at(i, format!("no file shaders/common/{file}.wgsl")))?;
                    imported.push(file.to_string());
                    self.compose(file, text, imported, out)?;
                }
                Some("#const") => {
                    let name = arg.ok_or_else(|| at(i, "#const names no number".into()))?;
                    let n = self
                        .number(name)
                        .ok_or_else(|| at(i, format!("unknown number {name}")))?;
                    out.push_str(&format!("const {name}: u32 = {n}u;\n"));
                }
                Some("#unroll") => {
                    let var = arg.ok_or_else(|| at(i, "#unroll names no variable".into()))?;
                    let name = words
                        .next()
                        .ok_or_else(|| at(i, "#unroll names no count".into()))?;
                    let n = self
                        .number(name)
                        .ok_or_else(|| at(i, format!("unknown number {name}")))?;
                    if unroll.is_some() {
                        return Err(at(i, "#unroll inside #unroll".into()));
                    }
                    unroll = Some((var.to_string(), n, String::new()));
                }
                Some("#end_unroll") => {
                    let (var, n, body) = unroll
                        .take()
                        .ok_or_else(|| at(i, "#end_unroll without #unroll".into()))?;
                    for k in 0..n {
                        out.push_str(&format!(
                            "    {{\n        let {var} = {k}u;\n{body}    }}\n"
                        ));
                    }
                }
                Some(other) => return Err(at(i, format!("unknown directive {other}"))),
                None => {
                    let target = match unroll.as_mut() {
                        Some((_, _, body)) => body,
                        None => &mut *out,
                    };
                    target.push_str(line);
                    target.push('\n');
                }
            }
        }
        if !open.is_empty() {
            return Err(format!("{name}.wgsl: #if without #endif"));
        }
        if unroll.is_some() {
            return Err(format!("{name}.wgsl: #unroll without #end_unroll"));
        }
        Ok(())
    }
}

/// The bandwidth baseline kernel (`shaders/copy_vec4.wgsl`), a module of its own.
pub const COPY_VEC4_SOURCE: &str = include_str!("../shaders/copy_vec4.wgsl");

#[cfg(test)]
mod tests {
    use super::*;

    fn variant() -> Variant {
        Variant::plain(Shader::ThreadRow)
    }

    fn compose(text: &str, v: Variant) -> Result<String, String> {
        let mut out = String::new();
        v.compose("test", text, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    #[test]
    fn conditionals_keep_the_first_branch_whose_flag_is_set() {
        let text = "a\n#if SRC_HALF\nb\n#elif DST_HALF\nc\n#else\nd\n#endif\ne\n";
        let v = variant();
        assert_eq!(compose(text, v).unwrap(), "a\nd\ne\n");
        let v = Variant {
            dst_half: true,
            ..variant()
        };
        assert_eq!(compose(text, v).unwrap(), "a\nc\ne\n");
        let v = Variant {
            src_half: true,
            dst_half: true,
            ..variant()
        };
        assert_eq!(compose(text, v).unwrap(), "a\nb\ne\n");
        let nested = "#if SRC_HALF\n#if DST_HALF\nx\n#else\ny\n#endif\n#endif\n";
        assert_eq!(compose(nested, variant()).unwrap(), "");
        let v = Variant {
            src_half: true,
            ..variant()
        };
        assert_eq!(compose(nested, v).unwrap(), "y\n");
    }

    #[test]
    fn unrolled_blocks_bind_their_index_once_per_slot() {
        let text = "#const CACHE_SLOTS\n#unroll k CACHE_SLOTS\n        f(k);\n#end_unroll\n";
        let v = Variant {
            cache_slots: 2,
            ..variant()
        };
        assert_eq!(
            compose(text, v).unwrap(),
            "const CACHE_SLOTS: u32 = 2u;\n    {\n        let k = 0u;\n        f(k);\n    }\n    {\n        let k = 1u;\n        f(k);\n    }\n"
        );
        assert_eq!(
            compose(text, variant()).unwrap(),
            "const CACHE_SLOTS: u32 = 0u;\n"
        );
    }

    #[test]
    fn malformed_directives_are_errors() {
        for text in [
            "#if NO_SUCH_FLAG\n#endif\n",
            "#if SRC_HALF\n",
            "#endif\n",
            "#else\n",
            "#import no_such_file\n",
            "#unroll k NO_SUCH_NUMBER\n#end_unroll\n",
            "#unroll k CACHE_SLOTS\n",
            "#include x\n",
        ] {
            assert!(compose(text, variant()).is_err(), "{text:?}");
        }
    }

    #[test]
    fn every_variant_names_its_entry_point_and_needs_subgroups_only_if_its_kernel_does() {
        for k in RowKernel::ALL {
            for shader in Shader::of_kernel(k) {
                let src = Variant::plain(*shader).source().unwrap();
                assert!(
                    src.contains(&format!("fn {}(", shader.entry_point())),
                    "{k:?}"
                );
                assert!(!shader.needs_subgroups() || k.needs_subgroups());
            }
        }
    }
}
