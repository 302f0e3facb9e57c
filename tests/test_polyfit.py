"""The classic PyTorch tutorial: y = sin(x) fitted by a cubic with autograd."""

import importlib.util
import subprocess
import sys

from tracejit.__main__ import polyfit_eager, polyfit_numpy


def test_polyfit_tutorial_reaches_tutorial_loss():
    loss, coeffs = polyfit_eager(steps=2000, lr=1e-6)
    ref_loss, ref_coeffs = polyfit_numpy(steps=2000, lr=1e-6)
    assert loss < 10.0  # the tutorial's numpy version ends at 9.08
    assert abs(loss - ref_loss) < 1e-2 * ref_loss
    for a, b in zip(coeffs, ref_coeffs):
        assert abs(a - b) < 1e-3


def test_demo_command_runs(tmp_path):
    png = tmp_path / "losses.png"
    out = subprocess.run([sys.executable, "-m", "tracejit", "demo", "--steps", "200",
                          "--plot", str(png)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "final loss" in out.stdout
    if importlib.util.find_spec("matplotlib"):
        assert f"loss curves: wrote {png}" in out.stdout
        assert png.read_bytes().startswith(b"\x89PNG")


def test_without_matplotlib_the_demo_says_so(tmp_path, monkeypatch):
    from tracejit.__main__ import plot_losses
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    line = plot_losses(str(tmp_path / "x.png"), {"numpy": [(0, 1.0)]}, [(0, 2.0)])
    assert "matplotlib is not installed" in line and not (tmp_path / "x.png").exists()


def test_package_layout_installs_codegen_and_runtime_under_tracejit():
    import tracejit.codegen
    import tracejit.runtime
    assert tracejit.codegen.__doc__ and tracejit.runtime.__doc__


def test_readme_example_runs():
    import pathlib
    import re
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
    code = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)[0]
    exec(compile(code, "README.md", "exec"), {})
