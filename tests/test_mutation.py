"""The mutation tool (tests/mutation/mutate.py, docs/mutation.md) keeps up with the code: every
module and test its table names exists, and its mutants are seeded and apply to the source."""

import ast
import os
import sys

from conftest import ROOT, TESTS

sys.path.insert(0, os.path.join(TESTS, "mutation"))
import mutate  # noqa: E402


def test_the_table_names_existing_modules_tests_and_functions():
    for path, target in mutate.TARGETS.items():
        source = open(os.path.join(ROOT, path)).read()
        defined = {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert set(target.functions) <= defined, (path, set(target.functions) - defined)
        for test in target.tests:
            file, _, name = test.partition("::")
            assert os.path.isfile(os.path.join(ROOT, file)), (path, test)
            if name:
                tests = {n.name for n in ast.walk(ast.parse(open(os.path.join(ROOT, file)).read()))
                         if isinstance(n, ast.FunctionDef)}
                assert name in tests, (path, test)


def test_mutants_are_seeded_and_change_one_place():
    # (mutate.all_mutants also compiles every mutant: seconds; the tool does that.)
    mutants = {path: mutate.mutants_of(path, open(os.path.join(ROOT, path)).read(), target.functions)
               for path, target in mutate.TARGETS.items()}
    assert set(mutants) == set(mutate.TARGETS) and all(mutants.values())
    first, again = mutate.sample(mutants, 40, seed=0), mutate.sample(mutants, 40, seed=0)
    assert first == again and first != mutate.sample(mutants, 40, seed=1)
    assert {m.path for m in first} == set(mutate.TARGETS)  # round-robin: every module gets its share
    steps = open(os.path.join(ROOT, "wrna_jax/steps.py")).read()
    dropped = [m for m in mutants["wrna_jax/steps.py"] if m.operator == "drop-term"
               and m.before == "nll + regularizer_weight * regularizer" and m.after == "nll"]
    assert len(dropped) == 1  # the mutant of issue 25
    mutated = mutate.apply(steps, dropped[0])
    assert "loss = nll\n" in mutated and mutated.replace("loss = nll\n", "") == steps.replace(
        "loss = nll + regularizer_weight * regularizer\n", "")
