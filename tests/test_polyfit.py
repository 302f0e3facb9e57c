"""The classic PyTorch tutorial: y = sin(x) fitted by a cubic with autograd."""

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


def test_demo_command_runs():
    out = subprocess.run([sys.executable, "-m", "tracejit", "demo", "--steps", "200"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "final loss" in out.stdout


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
