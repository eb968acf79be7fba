"""Mutation testing of the core: one-line mutants of the modules that carry the method and the
run's promises, each run against the tests that cover its module (docs/mutation.md).

    python tests/mutation/mutate.py --seed 0 --count 60            # sample, run, report
    python tests/mutation/mutate.py --seed 0 --count 60 --list     # only list the sample
    python tests/mutation/mutate.py --seed 0 --count 60 --ids ID,ID --rerun-survivors

A mutant is one small change of one line of the current source, found in its syntax tree at run
time (no line numbers or file contents are written here, so the tool keeps working while the code
changes): swap an operator (+/-, *//, <, <=, ==, and/or), drop a term of a sum or product, change
a constant (a number, an axis, True/False), replace a function by its twin (max/min, mean/sum,
argmax/argmin, ...), drop a call (tanh, log_softmax, a layer, ...), or reorder two transforms (two
consecutive statements that rewrite the same variable, two steps of an optax chain). Mutants are
sampled with a seed, round-robin over the modules so that each gets its share.

Every mutant runs in a copy of the repository (never the working tree), against the pytest
selection `TARGETS` lists for its module, with `-x` (the first failing test kills it) and a time
limit (a timeout counts as killed: the mutant made the tests hang or crawl). A mutant the
selection does not kill is a survivor; `--rerun-survivors` reruns survivors against the whole
suite. Everything shares one persistent JAX compilation cache, so only the programs a mutant
changes are compiled again.

Why a small script and not mutmut or cosmic-ray: each pytest process pays ~5-10 s of JAX and
TensorFlow imports, so a mutant must run only the few tests of its module; mutmut (3.x) runs the
tests it maps by coverage through its own trampolines in every function (which change what jax.jit
traces and are slow under jit), and cosmic-ray needs a session database and a config per run;
neither samples a seeded subset across modules. This script is ~400 lines, needs only the standard
library and pytest, and prints every mutant as file, line, operator, before -> after.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Target:
    """A module to mutate: the pytest arguments that cover it (files, node ids, -k), and
    optionally the only functions (or methods) whose lines are mutated."""

    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()


# The one place to update when modules or tests move: module -> the tests that cover it. Keep each
# selection to the few tests that exercise the module; the whole suite reruns only survivors.
STEP_LOSS = "tests/test_steps.py::test_step_loss_and_gradient_match_an_independent_computation"
DEV_BRANCH = "tests/test_weights.py::test_dev_branch_wrn_checkpoint_computes_the_dev_function"  # output '50'
RELEASED = "tests/test_weights.py::test_released_wrn_attention_network_computes_the_released_function"
TARGETS: dict[str, Target] = {
    "wrna_jax/models/attention.py": Target(("tests/test_attention.py", STEP_LOSS, RELEASED, "tests/test_models.py")),
    "wrna_jax/models/rectify.py": Target((STEP_LOSS, DEV_BRANCH, "tests/test_models.py", "tests/test_init.py")),
    "wrna_jax/models/network.py": Target((STEP_LOSS, DEV_BRANCH, "tests/test_models.py")),
    "wrna_jax/models/layers.py": Target(("tests/test_models.py", "tests/test_init.py")),
    "wrna_jax/models/normalization.py": Target(("tests/test_models.py",)),
    "wrna_jax/steps.py": Target(("tests/test_steps.py",)),
    "wrna_jax/optim.py": Target((
        "tests/test_train.py::test_schedules_and_learning_rate_groups",
        "tests/test_train.py::test_sgd_follows_pytorch_weight_decay_then_momentum_then_the_group_learning_rate",
        "tests/test_steps.py")),
    "wrna_jax/metrics.py": Target(("tests/test_train.py::test_eval_step_sums_count_padding_nowhere_and_give_the_split_metrics",
                                   "tests/test_train.py::test_ten_crop_evaluation_averages_log_probabilities_over_crops")),
    "wrna_jax/data/pipeline.py": Target(("tests/test_cluttered_mnist.py",
                                         "tests/test_fine_grained_data.py::test_same_seed_gives_the_same_augmented_batches")),
    "wrna_jax/data/preprocessing.py": Target(("tests/test_fine_grained_data.py",
                                              "tests/test_cluttered_mnist.py::test_preprocess_scales_to_unit_float")),
    "wrna_jax/data/holdout.py": Target((
        "tests/test_fine_grained_data.py::test_held_out_split_is_stratified_seeded_and_leaves_training_examples",
        "tests/test_real_photos.py::test_real_photos_train_evaluate_and_predict")),
    "wrna_jax/checkpoint.py": Target(("tests/test_train.py::test_checkpoints_keep_the_latest_and_the_best",
                                      "tests/test_train.py::test_has_checkpoints_ignores_unfinished_saves",
                                      "tests/test_train.py::test_checkpoint_choice_errors",
                                      "tests/test_train.py::test_early_stop_counts_evaluations_since_the_best_and_a_signal_saves_only_unsaved_steps"),
                                     functions=("_metric", "best_step", "latest_step", "all_steps", "resolve",
                                                "resume_point", "save_evaluated", "save_interrupted")),
    "wrna_jax/metrics_file.py": Target((
        "tests/test_reliability.py::test_best_and_last_validation_are_selected_from_metrics_file",
        "tests/test_reliability.py::test_truncate_after_drops_later_and_cut_short_entries_from_jsonl_and_tensorboard"),
        functions=("selection", "truncate_after")),
}

BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
               ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
# Functions (by their last name) and their twins.
TWINS = {"max": "min", "min": "max", "maximum": "minimum", "minimum": "maximum", "mean": "sum", "sum": "mean",
         "argmax": "argmin", "argmin": "argmax", "softmax": "log_softmax", "log_softmax": "softmax",
         "any": "all", "all": "any", "floor": "ceil", "ceil": "floor", "sigmoid": "tanh", "tanh": "sigmoid",
         "sqrt": "square", "square": "sqrt", "rsqrt": "sqrt", "ones": "zeros", "zeros": "ones"}
# Calls of one argument that can be dropped (f(x) -> x).
DROPPABLE = {"tanh", "log_softmax", "softmax", "sigmoid", "relu", "sqrt", "rsqrt", "square", "exp", "log", "abs",
             "round", "sorted", "reversed", "stop_gradient", "rint", "clip_by_value"}


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One change: replace source[start:end] (offsets in the file) of `path` by `after`."""

    path: str
    line: int
    operator: str
    start: int
    end: int
    before: str
    after: str

    @property
    def id(self) -> str:
        """path:line:offset:operator:hash of the replacement (unique, stable while the file is)."""
        return f"{self.path}:{self.line}:{self.start}:{self.operator}:{hashlib.sha1(self.after.encode()).hexdigest()[:6]}"

    def describe(self) -> str:
        one = lambda s: " ".join(s.split())
        return f"{self.path}:{self.line} {self.operator}: {one(self.before)} -> {one(self.after)}"


def _offsets(source: str) -> list[int]:
    starts, total = [], 0
    for line in source.splitlines(keepends=True):
        starts.append(total)
        total += len(line.encode())
    return starts


def _last_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _skipped(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Docstrings, error messages, annotations, decorators, f-strings and logging stay as they are."""
    child, node = node, parents.get(node)
    while node is not None:
        if isinstance(node, (ast.Raise, ast.JoinedStr, ast.Assert)):
            return True
        if isinstance(node, (ast.arg, ast.AnnAssign)) and child is getattr(node, "annotation", None):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (child is node.returns
                                                                         or child in node.decorator_list):
            return True
        if isinstance(node, ast.Call) and _last_name(node.func) in {"warning", "info", "print", "debug", "error"}:
            return True
        child, node = node, parents.get(node)
    return False


def _enclosing_functions(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> set[str]:
    names = set()
    while node is not None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        node = parents.get(node)
    return names


def _assigned(stmt: ast.stmt) -> str | None:
    """The one plain name a statement assigns (x = ..., x += ...), else None."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        return stmt.target.id
    return None


def _reads(stmt: ast.stmt, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) for n in ast.walk(stmt))


def mutants_of(path: str, source: str, functions: tuple[str, ...] = ()) -> list[Mutant]:
    """Every mutant of one module's source, in the order of the syntax tree (deterministic)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    offsets, raw = _offsets(source), source.encode()
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found: list[Mutant] = []

    def span(node: ast.AST) -> tuple[int, int]:
        return (offsets[node.lineno - 1] + node.col_offset, offsets[node.end_lineno - 1] + node.end_col_offset)

    def add(node: ast.AST, operator: str, replacement: ast.AST | str) -> None:
        start, end = span(node)
        before = raw[start:end].decode()
        after = replacement if isinstance(replacement, str) else ast.unparse(replacement)
        if " ".join(after.split()) != " ".join(before.split()):
            found.append(Mutant(path, node.lineno, operator, start, end, before, after))

    def text(node: ast.AST) -> str:
        start, end = span(node)
        return raw[start:end].decode()

    for node in ast.walk(tree):
        if not hasattr(node, "lineno") or id(node) in docstrings or _skipped(node, parents):
            continue
        if functions and not (_enclosing_functions(node, parents) & set(functions)):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
            swapped = ast.BinOp(node.left, BINOP_SWAPS[type(node.op)](), node.right)
            add(node, "swap-operator", swapped)
            if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
                add(node, "drop-term", text(node.left))
                add(node, "drop-term", text(node.right) if not isinstance(node.op, ast.Sub) else f"-({text(node.right)})")
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE_SWAPS:
            add(node, "swap-comparison", ast.Compare(node.left, [COMPARE_SWAPS[type(node.ops[0])]()], node.comparators))
        elif isinstance(node, ast.BoolOp):
            add(node, "swap-boolean", ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            add(node, "drop-negation", text(node.operand))
        elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, bytes)) and node.value is not None:
            parent = parents.get(node)
            axis = isinstance(parent, ast.keyword) and parent.arg in ("axis", "axes")
            operator = "axis" if axis else "constant"
            value = node.value
            if isinstance(value, bool):
                add(node, operator, repr(not value))
            elif isinstance(value, int):
                add(node, operator, repr(value + 1))
                add(node, operator, repr(value - 1 if value else 2))
            elif isinstance(value, float):
                add(node, operator, repr(2 * value if value else 1.0))
                if value:
                    add(node, operator, "0.0")
        elif isinstance(node, ast.Call):
            name = _last_name(node.func)
            if name in TWINS:
                func = node.func
                twin = (ast.Attribute(func.value, TWINS[name], ast.Load()) if isinstance(func, ast.Attribute)
                        else ast.Name(TWINS[name], ast.Load()))
                add(node.func, "swap-function", twin)
            one_arg = len(node.args) == 1 and not isinstance(node.args[0], ast.Starred)
            if one_arg and (name in DROPPABLE or isinstance(node.func, ast.Call)):
                add(node, "drop-call", text(node.args[0]))
            if name == "chain" and len(node.args) >= 2:
                for a, b in zip(node.args, node.args[1:]):
                    (start, middle), (after_gap, end) = span(a), span(b)
                    found.append(Mutant(path, a.lineno, "reorder", start, end, raw[start:end].decode(),
                                        text(b) + raw[middle:after_gap].decode() + text(a)))
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.For, ast.If, ast.With)):
            body = node.body
            for first, second in zip(body, body[1:]):
                name = _assigned(first)
                if name and _assigned(second) == name and _reads(second, name) and first.end_lineno < second.lineno:
                    a, b = span(first), span(second)
                    gap = raw[a[1]:b[0]].decode()
                    found.append(Mutant(path, first.lineno, "reorder", a[0], b[1], raw[a[0]:b[1]].decode(),
                                        text(second) + gap + text(first)))
    return found


def apply(source: str, mutant: Mutant) -> str:
    raw = source.encode()
    return (raw[:mutant.start] + mutant.after.encode() + raw[mutant.end:]).decode()


def all_mutants(root: str = ROOT) -> dict[str, list[Mutant]]:
    """{module: its mutants} over `TARGETS`, from the current files (mutants that do not compile
    are left out)."""
    out = {}
    for path, target in TARGETS.items():
        with open(os.path.join(root, path)) as f:
            source = f.read()
        kept = []
        for mutant in mutants_of(path, source, target.functions):
            try:
                compile(apply(source, mutant), path, "exec")
            except SyntaxError:
                continue
            kept.append(mutant)
        out[path] = kept
    return out


def sample(mutants: dict[str, list[Mutant]], count: int, seed: int) -> list[Mutant]:
    """`count` mutants drawn with `seed`: each module's list shuffled, then taken round-robin over
    the modules (in TARGETS order), so that every module gets its share."""
    rng = random.Random(seed)
    queues = {path: rng.sample(found, len(found)) for path, found in mutants.items()}
    chosen: list[Mutant] = []
    while len(chosen) < count and any(queues.values()):
        for path in mutants:
            if queues[path] and len(chosen) < count:
                chosen.append(queues[path].pop(0))
    return chosen


def copy_repository(destination: str) -> None:
    """The files git tracks or would track (untracked, not ignored) at their current contents."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(destination, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, name))


def run_tests(copy: str, tests: tuple[str, ...], timeout_s: float, env: dict[str, str]) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'error' | 'timeout', seconds, last lines of output) of pytest -x."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, ""
    seconds = time.monotonic() - start
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    outcome = {0: "passed", 1: "failed"}.get(done.returncode, "error")
    return outcome, seconds, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--list", action="store_true", help="only list the sampled mutants")
    parser.add_argument("--ids", default="", help="comma-separated mutant ids to run (instead of the sample)")
    parser.add_argument("--modules", default="", help="comma-separated module paths to restrict to")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per mutant (default: 3 x the "
                        "module's baseline + 30)")
    parser.add_argument("--rerun-survivors", action="store_true", help="rerun survivors on the whole suite")
    parser.add_argument("--json", default="", help="write the outcomes here")
    args = parser.parse_args(argv)

    mutants = all_mutants()
    if args.modules:
        mutants = {p: m for p, m in mutants.items() if p in args.modules.split(",")}
    if args.ids:  # any mutant of the modules, sampled or not
        wanted = set(args.ids.split(","))
        chosen = [m for found in mutants.values() for m in found if m.id in wanted]
        what = f"{len(chosen)} chosen by id ({len(wanted) - len(chosen)} ids not found)"
    else:
        chosen = sample(mutants, args.count, args.seed)
        what = f"sample of {len(chosen)} (seed {args.seed})"
    print(f"{sum(map(len, mutants.values()))} mutants in {len(mutants)} modules; {what}:", flush=True)
    for i, m in enumerate(chosen):
        print(f"  [{i:3d}] {m.id}  {m.describe()}", flush=True)
    if args.list:
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="wrna_mutation_") as work:
        copy, cache = os.path.join(work, "repo"), os.path.join(work, "jax_cache")
        copy_repository(copy)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "WRNA_TEST_JAX_CACHE": cache,
               "JAX_COMPILATION_CACHE_DIR": cache, "PYTHONPATH": copy}
        where = subprocess.run([sys.executable, "-c", "import wrna_jax; print(wrna_jax.__file__)"], cwd=copy, env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        if not where.startswith(copy):
            raise SystemExit(f"the copy imports wrna_jax from {where}, not from {copy}")
        baseline: dict[str, float] = {}
        for path in dict.fromkeys(m.path for m in chosen):
            outcome, seconds, tail = run_tests(copy, TARGETS[path].tests, 1800, env)
            print(f"baseline {path}: {outcome} in {seconds:.0f} s", flush=True)
            if outcome != "passed":
                print(f"  the unmutated tests of {path} do not pass; its mutants are skipped:\n{tail}")
                continue
            baseline[path] = seconds
        for i, m in enumerate(chosen):
            if m.path not in baseline:
                continue
            original = open(os.path.join(copy, m.path)).read()
            try:
                with open(os.path.join(copy, m.path), "w") as f:
                    f.write(apply(original, m))
                timeout = args.timeout or 3 * baseline[m.path] + 30
                outcome, seconds, tail = run_tests(copy, TARGETS[m.path].tests, timeout, env)
                status = "survived" if outcome == "passed" else f"killed ({outcome})"
                if outcome == "passed" and args.rerun_survivors:
                    outcome, seconds2, tail = run_tests(copy, ("tests",), 3600, env)
                    seconds += seconds2
                    status = "survived the suite" if outcome == "passed" else f"killed by the suite ({outcome})"
            finally:
                with open(os.path.join(copy, m.path), "w") as f:
                    f.write(original)
            print(f"[{i:3d}] {status:28s} {seconds:5.0f} s  {m.describe()}", flush=True)
            results.append({**dataclasses.asdict(m), "id": m.id, "status": status, "seconds": round(seconds, 1)})
    survivors = [r for r in results if r["status"].startswith("survived")]
    print(f"\nscore: {len(results) - len(survivors)}/{len(results)} killed "
          f"({100 * (len(results) - len(survivors)) / max(len(results), 1):.0f}%); survivors:")
    for r in survivors:
        print(f"  {r['id']}  {Mutant(**{k: r[k] for k in ('path', 'line', 'operator', 'start', 'end', 'before', 'after')}).describe()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": args.seed, "count": args.count, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
