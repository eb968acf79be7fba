"""Programs the tests run in separate processes (the device count and `jax.distributed` are fixed
when JAX starts). They assert nothing: they write what they computed (arrays as .npz, facts as
JSON) for the test to compare, so a failure names the tensor and the numbers.

    python tests/workers.py distributed OUTDIR N ID PORT [ARGS... -- EVAL_ARGS...]
        # one of N processes; then train_then_eval(ARGS, EVAL_ARGS) in the same processes
    python tests/workers.py train_then_eval - ARGS... -- EVAL_ARGS...
        # train.py ARGS, then eval.py ARGS EVAL_ARGS in the same process (one JAX start-up)
"""

import json
import os
import signal
import sys
import time

import numpy as np

STEPS_PER_EPOCH = 10
REORDERINGS = 3  # reordered copies of each reference run (tests/numerics.py)


def reordered(batches: list[dict[str, np.ndarray]], seed: int, grad_accum_steps: int = 1) -> list[dict]:
    """The same batches with their examples in another order; with accumulation over k
    micro-batches (micro-batch j = examples j, j + k, ...) only within each micro-batch."""
    rng = np.random.default_rng(seed)
    out = []
    for batch in batches:
        size = len(batch["label"])
        order = np.arange(size)
        for j in range(grad_accum_steps):
            order[j::grad_accum_steps] = rng.permutation(order[j::grad_accum_steps])
        out.append({key: value[order] for key, value in batch.items()})
    return out


def random_batches(count: int, size: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"image": rng.random((size, 40, 40, 1), np.float32),
             "label": rng.integers(0, 10, size).astype(np.int32), "mask": np.ones(size, bool)}
            for _ in range(count)]


def distributed_config():
    """The multi-device comparison (test_parallel.py): the attention CNN, two SGD steps on
    batches of 32, each accumulated over two micro-batches."""
    from configs import cluttered_mnist

    config = cluttered_mnist.get_config()
    config.update_from_flattened_dict({"attention.depth": 1, "batch_size": 32, "optimizer.learning_rate": 0.01,
                                       "grad_accum_steps": 2})
    return config


BATCHES = dict(count=2, size=32)  # the global batches of the comparison (`random_batches`)


def _variables(state) -> dict[str, np.ndarray]:
    import flax
    import jax

    return flax.traverse_util.flatten_dict(
        jax.device_get({"params": state.params, "batch_stats": state.batch_stats}), sep="/")


def train(config, runs, mesh, share=slice(None)):
    """For each list of batches in `runs`, from the same initial state: (variables before,
    variables after, last metrics, final state) of `make_train_step`, compiled once; each process
    feeds its `share` of every global batch."""
    import jax

    from wrna_jax import parallel, steps
    from wrna_jax.models import create_model
    from wrna_jax.state import create_train_state

    model = create_model(config)
    step = steps.make_train_step(config, model, mesh, STEPS_PER_EPOCH)
    first = create_train_state(config, model, (40, 40, 1), mesh, STEPS_PER_EPOCH)
    before = _variables(first)
    results = []
    for batches in runs:
        state = jax.tree.map(jax.numpy.copy, first)  # the step donates (consumes) its input state
        for batch in batches:
            sharded = parallel.shard_batch({k: v[share] for k, v in batch.items()}, parallel.batch_sharding(mesh))
            state, metrics = step(state, sharded)
        results.append((before, _variables(state), jax.device_get(metrics), state))
    return results


def distributed(outdir: str, num_processes: int, process_id: int, port: str,
                train_args: list[str] | None = None, eval_args: list[str] | None = None) -> None:
    from wrna_jax import distributed as dist

    joined = dist.initialize({"coordinator_address": f"localhost:{port}", "num_processes": num_processes,
                              "process_id": process_id, "initialization_timeout": 120,
                              "local_device_ids": None})
    import jax

    from wrna_jax import checkpoint, parallel
    from wrna_jax import workdir as wd
    from wrna_jax.errors import WorkdirError
    from wrna_jax.logs import metric_writer

    facts = {"joined": joined, "process_count": jax.process_count(), "device_count": jax.device_count(),
             "local_device_count": jax.local_device_count()}
    size = BATCHES["size"]
    share = slice(process_id * size // num_processes, (process_id + 1) * size // num_processes)
    ((before, after, metrics, state),) = train(distributed_config(), [random_batches(**BATCHES)],
                                               parallel.create_mesh(), share)
    facts["state_devices"] = len(state.params["backbone"]["fc2"]["kernel"].sharding.device_set)
    np.savez(os.path.join(outdir, f"distributed_before_{num_processes}_{process_id}.npz"), **before)
    np.savez(os.path.join(outdir, f"distributed_after_{num_processes}_{process_id}.npz"), **after)

    workdir = os.path.join(outdir, f"run{num_processes}")
    os.makedirs(workdir, exist_ok=True)
    with wd.TrainLock(workdir):  # process 0 locks; a second lock fails on every process
        try:
            with wd.TrainLock(workdir):
                facts["second_lock"] = "acquired"
        except WorkdirError as error:
            facts["second_lock"] = str(error)
    ckpts = checkpoint.Checkpoints(workdir)
    ckpts.save(2, state, distributed_config(), {"accuracy": 0.5})
    ckpts.wait()
    restored = ckpts.restore(2, state)  # `state` gives the structure and the shardings
    facts["restored_step"] = int(jax.device_get(restored.step))
    facts["restored_differences"] = {name: float(np.max(np.abs(value - after[name])))
                                     for name, value in _variables(restored).items()}
    log = metric_writer(workdir)
    log.write_scalars(2, {"train_loss": float(metrics["loss"])})
    log.close()

    marker = os.path.join(workdir, "first")
    with dist.process_0_first("writing the marker"):
        if process_id == 0:
            time.sleep(1)
            with open(marker, "w") as f:
                f.write("written by process 0")
        else:
            facts["marker_seen_by_process_1"] = open(marker).read() if os.path.exists(marker) else None

    preemption = dist.Preemption(ckpts.manager)
    for i in range(400):
        if process_id == num_processes - 1 and i == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # one process notified, as a scheduler would
        if preemption.reached(i):
            break
        time.sleep(0.02)
    preemption.close()
    ckpts.close()
    facts["preempted_at"] = i
    if train_args is not None:  # the user's commands, in the processes that already joined
        facts["train_then_eval"] = train_then_eval(train_args, eval_args or [])
    print(json.dumps(facts), flush=True)


def train_then_eval(args: list[str], eval_args: list[str]) -> int:
    """train.py's and then eval.py's `main` through `cli.invoke` (what `cli.run` calls), in this
    process, logging to stderr as under absl's app.run with --verbosity=1 (the INFO lines the
    test reads): the exit status of the first that fails, else 0."""
    from absl import logging

    import eval as eval_script
    import train as train_script
    from wrna_jax import cli

    logging.use_absl_handler()
    return (cli.invoke(train_script.main, ["train.py", "--verbosity=1", *args])
            or cli.invoke(eval_script.main, ["eval.py", "--verbosity=1", *args, *eval_args]))


if __name__ == "__main__":
    task, outdir, *rest = sys.argv[1:]
    if task == "train_then_eval":
        split = rest.index("--")
        sys.exit(train_then_eval(rest[:split], rest[split + 1:]))
    elif task == "distributed":
        commands = rest[3:]
        split = commands.index("--") if "--" in commands else len(commands)
        distributed(outdir, int(rest[0]), int(rest[1]), rest[2], commands[:split] or None, commands[split + 1:])
    else:
        raise SystemExit(f"unknown task {task!r}")
