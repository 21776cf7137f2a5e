"""Issue 25's two defects, checked on the code before the change (de49596):

    git worktree add /tmp/before de49596
    cd /tmp/before && COMPSTUDY_DATA_DIR=<this checkout>/data PYTHONPATH=/tmp/before/lib <venv>/bin/python <this checkout>/benchmarks/issue25_before_checks.py

Each check is the assertion of the test that now guards the defect, written with the old API; PASS means the old
code already behaved, FAIL means the defect is there. Output of 2026-12-01: benchmarks/results/issue25_before_checks.txt."""
import os
import sys
import tempfile

tmp = tempfile.mkdtemp(prefix="before-")
for var, sub in [("COMPSTUDY_ARTIFACTS_DIR", "a"), ("COMPSTUDY_RESULTS_DIR", "r"), ("COMPSTUDY_RUNS_DIR", "u"),
                 ("COMPSTUDY_FIGURES_DIR", "f")]:
    os.environ[var] = os.path.join(tmp, sub)
os.environ.pop("COMPSTUDY_CONFIG", None)
import compstudy
print("compstudy from", compstudy.__file__)
from compstudy import params

# (1) tests/test_params.py::test_in_jupyter_a_value_written_back_to_its_default_is_the_one_used
cell = {"study": "interactive", "variants": ["8b", "4b", "4bfp4", "bf16", "dq8"]}
got = params.resolve("01_quantization", {}, cell)["variants"]
print("jupyter edit: the cell says", cell["variants"], "-> runs", got, "PASS" if got == cell["variants"] else "FAIL")

# (2) tests/test_controls_findings.py::test_a_fine_tuned_variant_and_its_control_see_the_same_tokens_in_the_same_batches
from compstudy.baseline import BaselineConfig, get_baseline
from compstudy.pipeline import FinetuneConfig, Pipeline, StepDefaults, build, control_name
from compstudy.prune import PruneConfig

base = get_baseline(BaselineConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=512, train_tokens=40_000,
                                   batch_size=16, seq_len=64, lr=3e-3), progress=False)
defaults = StepDefaults(prune=PruneConfig(calibration_batches=2, calibration_batch_size=4, calibration_seq_len=32,
                                          finetune_tokens=2048), finetune=FinetuneConfig(batch_size=16, seq_len=32))
corpora = ["tinyshakespeare:train"]
variant = build(base, Pipeline.from_name("AH50+ft", defaults), corpora, device="cpu", progress=False)
cname = control_name("AH50+ft", defaults)
control = build(base, Pipeline.from_name(cname, defaults), corpora, device="cpu", progress=False)
steps = (len(variant.history), len(control.history))
print(f"control batches: AH50+ft trained {steps[0]} steps, its control {cname} {steps[1]} steps "
      f"(the test wants both {2048 // (16 * 32)})", "PASS" if steps[0] == steps[1] == 2048 // (16 * 32) else "FAIL")
