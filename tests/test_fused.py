"""The fused LSTM layer (lstm_ae/fused_lstm.cpp): the same mathematics as the step-by-step cells, its gradients
those of autograd, and a machine that cannot build it runs the cells step by step after one line."""

import os
import subprocess
import sys

import pytest
import torch

from lstm_ae import fused
from lstm_ae.cells import LayerNormLSTM
from lstm_ae.model import LSTMAutoencoder

pytestmark = pytest.mark.skipif(fused.extension() is None, reason="the fused layer cannot be built here")


def _layer_inputs(cell: str, steps: int, batch: int = 3, hidden: int = 5, dtype=torch.float64):
    """(projection, h0, c0, weight, norms) of one layer with random, non-trivial values (norms: None for the plain
    cell; the layer norms' own parameters moved off 1 and 0)."""
    torch.manual_seed(0)
    layer = LayerNormLSTM(2, hidden).layers[0].to(dtype)
    with torch.no_grad():
        for norm in (layer.recurrent_norm, layer.cell_norm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    projected = torch.randn(batch, steps, 4 * hidden, dtype=dtype, requires_grad=True)
    h0, c0 = (torch.randn(batch, hidden, dtype=dtype, requires_grad=True) for _ in range(2))
    norms = (layer.recurrent_norm, layer.cell_norm) if cell == "layernorm" else None
    return projected, h0, c0, layer.recurrent.weight, norms


def _step_by_step(projected, h0, c0, weight, norms):
    """The cell's equations, one step at a time, in plain PyTorch (what the fused layer must equal)."""
    h, c, outputs = h0, c0, []
    for step in projected.unbind(1):
        recurrent = h @ weight.t()
        gates = step + (norms[0](recurrent) if norms else recurrent)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(norms[1](c) if norms else c)
        outputs.append(h)
    return torch.stack(outputs, dim=1), (h, c)


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
@pytest.mark.parametrize("steps", [1, 4])
def test_gradients_are_autograds_in_float64(cell, steps):
    projected, h0, c0, weight, norms = _layer_inputs(cell, steps)
    parameters = [weight, *(p for norm in norms or () for p in norm.parameters())]

    def layer(projected, h0, c0, *_):  # every output: each step's h, h_n and c_n
        outputs, (h_n, c_n) = fused.run(projected, (h0, c0), weight, norms)
        return outputs, h_n, c_n

    assert torch.autograd.gradcheck(layer, (projected, h0, c0, *parameters))


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_the_layer_equals_the_cells_equations_at_the_pixel_length(cell):
    projected, h0, c0, weight, norms = _layer_inputs(cell, 784)
    inputs = [projected, h0, c0, weight, *(p for norm in norms or () for p in norm.parameters())]
    results = []
    for run in (fused.run, lambda p, s, w, n: _step_by_step(p, *s, w, n)):
        outputs, (h_n, c_n) = run(projected, (h0, c0), weight, norms)
        loss = (outputs * torch.linspace(-1, 1, outputs.shape[-1], dtype=outputs.dtype)).sum() + c_n.sum()
        results.append([outputs, h_n, c_n, *torch.autograd.grad(loss, inputs)])
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-11)


def test_a_projection_in_two_parts_is_their_sum():
    # A decoder's input projection: z's (the same at every step) and the step's position's (the same in every
    # sequence), read as expanded views, never added up into a (N, T, 4H) tensor.
    projected, h0, c0, weight, norms = _layer_inputs("layernorm", 6)
    per_sequence = torch.randn(3, 1, 20, dtype=torch.float64, requires_grad=True)
    per_step = torch.randn(6, 20, dtype=torch.float64, requires_grad=True)

    def expanded(per_sequence, per_step):
        return per_sequence.expand(-1, 6, -1), per_step.unsqueeze(0).expand(3, -1, -1)

    def layer(per_sequence, per_step):
        return fused.run(expanded(per_sequence, per_step), (h0, c0), weight, norms)[0]

    assert torch.autograd.gradcheck(layer, (per_sequence, per_step))
    parts = expanded(per_sequence, per_step)
    outputs, _ = fused.run(parts, (h0, c0), weight, norms)
    torch.testing.assert_close(outputs, _step_by_step(sum(parts), h0, c0, weight, norms)[0])


MODELS = {
    "the pixel recipe": dict(encoder_cell="layernorm", decoder_input="position"),
    "the study's": dict(),
    "layer-normalised both, two layers, position": dict(
        encoder_cell="layernorm", decoder_cell="layernorm", num_layers=2, decoder_input="position"
    ),
    "layer-normalised both, repeat": dict(encoder_cell="layernorm", decoder_cell="layernorm"),
}


@pytest.mark.parametrize("options", MODELS.values(), ids=MODELS.keys())
def test_a_model_is_the_same_model_fused_or_step_by_step(options):
    # Same weights, same outputs and gradients: a checkpoint of either way loads into the other unchanged.
    torch.manual_seed(0)
    model = LSTMAutoencoder(1, 8, num_classes=3, steps=30, gate_bias="chrono", recurrent_init="orthogonal", **options)
    model = model.double()
    x = torch.rand(5, 30, 1, dtype=torch.float64)

    def outputs_and_gradients():
        model.zero_grad()
        out = model(x)
        (out.reconstruction.pow(2).sum() + out.logits.pow(2).sum()).backward()
        return [out.reconstruction, out.logits, *(p.grad for p in model.parameters())]

    fast = outputs_and_gradients()
    with fused.step_by_step():
        slow = outputs_and_gradients()
    for mine, theirs in zip(fast, slow):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # inference keeps one step's values, not the sequence's: the same outputs
        torch.testing.assert_close(model(x).reconstruction, fast[0])


def test_training_steps_reuse_the_layers_buffers():
    model = LSTMAutoencoder(1, 8, encoder_cell="layernorm", steps=50)
    x = torch.rand(4, 50, 1)
    sizes = []
    for _ in range(5):
        loss = model(x).reconstruction.sum()  # (the last step's graph, kept by `loss` until now, is let go)
        loss.backward()
        sizes.append(sum(buffer.numel() for free in fused._pool._free.values() for buffer in free))
    assert sizes[2:] == sizes[1:-1]  # from the second step on, nothing new is taken from the system


def test_a_nan_input_gives_nan_outputs():
    # The extension is compiled with -ffast-math: a NaN must still reach the loss (training stops a diverged trial).
    model = LSTMAutoencoder(1, 8, encoder_cell="layernorm", steps=10)
    x = torch.rand(2, 10, 1)
    x[0, 3] = float("nan")
    out = model(x).reconstruction
    assert out[0].isnan().all() and not out[1].isnan().any()


def test_bf16_autocast_runs_the_layer_in_fp32():
    model = LSTMAutoencoder(1, 8, num_classes=3, encoder_cell="layernorm", decoder_input="position", steps=20)
    x = torch.rand(4, 20, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        (out.reconstruction.float().pow(2).mean() + out.logits.float().pow(2).mean()).backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    torch.testing.assert_close(out.reconstruction.float(), model(x).reconstruction, atol=0.05, rtol=0)


def test_a_second_backward_gives_the_same_gradients():
    model = LSTMAutoencoder(1, 4, encoder_cell="layernorm", steps=5)
    loss = model(torch.rand(2, 5, 1)).reconstruction.sum()
    first = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    model(torch.rand(2, 5, 1)).reconstruction.sum().backward()  # another graph meanwhile: it takes other buffers
    for again, before in zip(torch.autograd.grad(loss, list(model.parameters())), first):
        torch.testing.assert_close(again, before)


def test_without_a_compiler_the_cells_run_step_by_step_after_one_line(tmp_path):
    code = (
        "import torch\n"
        "from lstm_ae import fused\n"
        f"fused._build_directory = lambda: {str(tmp_path)!r}\n"
        "from lstm_ae.model import LSTMAutoencoder\n"
        "model = LSTMAutoencoder(1, 4, encoder_cell='layernorm', steps=5)\n"
        "model(torch.rand(2, 5, 1)).reconstruction.sum().backward()\n"
        "print(fused.usable(torch.zeros(1)), model(torch.rand(2, 5, 1)).reconstruction.shape)\n"
    )
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False torch.Size([2, 5, 1])"
    said = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and said[0].startswith("lstm_ae: the fused LSTM layer cannot be built here (")
    assert said[0].endswith("the layers run step by step, slower")


def test_batch_rows_split_over_threads_give_the_same_gradients():
    # 64 rows in chunks of 16 over 2 threads: each thread its own scratch and its own share of the layer norms'
    # parameter gradients, added up at the end.
    projected, h0, c0, weight, norms = _layer_inputs("layernorm", 20, batch=64)
    inputs = [projected, h0, c0, weight, *(p for norm in norms for p in norm.parameters())]
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outputs, (_, c_n) = fused.run(projected, (h0, c0), weight, norms)
            results.append(torch.autograd.grad(outputs.sum() + c_n.sum(), inputs))
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results):
        torch.testing.assert_close(one, two, rtol=1e-12, atol=1e-12)


def test_saturated_gates_give_what_the_cells_give():
    # A gate's input of -100 is finite and shuts it: exp(100) overflows a float, and 1 / (1 + inf) under -ffast-math
    # had been NaN.
    projected, h0, c0, weight, norms = _layer_inputs("layernorm", 6, hidden=8, dtype=torch.float32)
    for cell_norms in (None, norms):
        with torch.no_grad():
            saturated = projected.detach().sign() * 100
            fast, _ = fused.run(saturated, (h0, c0), weight, cell_norms)
            slow, _ = _step_by_step(saturated, h0, c0, weight, cell_norms)
        assert not fast.isnan().any()
        torch.testing.assert_close(fast, slow)


def test_states_of_the_wrong_shape_are_refused():
    projected, h0, c0, weight, norms = _layer_inputs("layernorm", 3)
    with pytest.raises(RuntimeError, match=r"h0 and c0 must be \(B, H\)"):
        fused.run(projected, (h0, c0[:1]), weight, norms)


def test_a_model_in_bf16_without_autocast_runs_step_by_step():
    model = LSTMAutoencoder(1, 4, encoder_cell="layernorm", steps=5).to(torch.bfloat16)
    assert model(torch.rand(2, 5, 1, dtype=torch.bfloat16)).reconstruction.dtype == torch.bfloat16


def test_a_new_fit_lets_go_of_the_last_ones_buffers():
    from lstm_ae.data import Split, Splits
    from lstm_ae.train import fit

    x = torch.rand(8, 12, 1)
    splits = Splits(train=Split(x, None), val=Split(x, None), test=Split(x, None))
    model = LSTMAutoencoder(1, 4, encoder_cell="layernorm", steps=12)
    list(fit(model, splits, epochs=1, batch_size=4, lr=1e-3))
    assert fused._pool._free
    fit(model, splits, epochs=1, batch_size=4, lr=1e-3)
    assert not fused._pool._free


def test_fit_needs_one_set_of_buffers():
    # The trainer lets each step's graph go right after its backward: the next step takes the same buffers back, and
    # three steps an epoch keep no more than one.
    from lstm_ae.data import Split, Splits
    from lstm_ae.train import fit

    def kept_after(train_size: int) -> int:
        x = torch.rand(train_size, 10, 1)
        splits = Splits(train=Split(x, None), val=Split(x[:4], None), test=Split(x[:4], None))
        model = LSTMAutoencoder(1, 4, encoder_cell="layernorm", steps=10)
        list(fit(model, splits, epochs=2, batch_size=4, lr=1e-3))
        return sum(len(free) for (shape, _), free in fused._pool._free.items() if shape[0] == 10)  # (all 10 steps)

    assert kept_after(12) == kept_after(4) > 0
