"""Tune one transposed conv on a board over TVM's RPC tracker, then run the tuned build there.

    python examples/tune_on_board.py                      # the emulated board (arm_board.sh)
    python examples/tune_on_board.py --tracker HOST:9190 --key rpi4 --target cortex-a72

On the board: ``python -m tvm.exec.rpc_server --tracker HOST:9190 --key rpi4``.  Every
would-be best candidate is checked on the board against the float64 reference; the budget
here is tiny (emulated timings rank nothing: use a real board and more trials for speed).
"""

import argparse

import tvm
from tvm import relax

import tvm_deconv
from tvm_deconv import tuning
from tvm_deconv.plan import make_spec
from tvm_deconv.rpc import Board
from tvm_deconv.testing import (conv_transpose_reference, random_inputs, relative_error,
                                transposed_conv_module)

parser = argparse.ArgumentParser()
parser.add_argument("--tracker", default="127.0.0.1:9190")
parser.add_argument("--key", default="aarch64-qemu")
parser.add_argument("--target", default="cortex-a72")
parser.add_argument("--trials", type=int, default=2)
parser.add_argument("--work-dir", default="tuned-board")
args = parser.parse_args()

board = Board.parse(args.tracker, args.key, cross_cc="aarch64-linux-gnu-gcc")
spec = make_spec((1, 16, 6, 6), (16, 8, 4, 4), strides=2, padding=1)
tasks = tuning.make_tasks([spec], args.target, spaces=[tuning.DEFAULT, tuning.STOCK])
results = tuning.tune(tasks, args.target, args.work_dir, trials=args.trials, board=board)
print(tuning.results_table(results))

data, weight = random_inputs(spec, seed=1)
ex = tvm_deconv.build(transposed_conv_module(spec), args.target, {"w": weight},
                      tuning_logs=args.work_dir)
session, lib = board.load(ex)
dev = session.cpu()
out = relax.VirtualMachine(lib, dev)["main"](tvm.runtime.tensor(data, dev)).numpy()
err = relative_error(out, conv_transpose_reference(data, weight, spec))
print(f"tuned build on {board}: relative error {err:.1e}")
assert err < 1e-5
