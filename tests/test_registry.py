"""Model versions: immutable folders, an active pointer swapped atomically, promote/rollback from the CLI,
and kill -9 in the middle of a promote or an add leaves a registry that reads and works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitrec.cli import main
from digitrec.registry import Pointer, Registry, RegistryError, resolve_models_dir, serving_choice


def fake_bundle(folder: Path, marker: str, size: int = 1000) -> Path:
    """A bundle-shaped folder (the registry copies files; it never runs them)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(marker.encode() * size)
    (folder / "model.json").write_text(json.dumps({"architecture": marker, "test_accuracy": 0.99,
                                                   "lineage": {"base_version": None, "corrections": 7}}))
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "models")
    for marker in ("a", "b", "c"):
        registry.add(fake_bundle(tmp_path / marker, marker))
    return registry


def test_versions_are_numbered_copies_never_overwritten(registry: Registry, tmp_path: Path) -> None:
    assert [v.name for v in registry.versions()] == ["v1", "v2", "v3"]
    assert registry.get("v2").metadata["architecture"] == "b"
    assert (registry.get("v1").path / "model.tflite").read_bytes() == b"a" * 1000
    assert not os.access(registry.get("v1").path / "model.tflite", os.W_OK) or os.geteuid() == 0
    assert registry.get("v1").path.stat().st_mode & 0o777 == 0o755
    fake_bundle(tmp_path / "a", "z")  # the source changes afterwards: the version does not
    assert (registry.get("v1").path / "model.tflite").read_bytes() == b"a" * 1000
    with pytest.raises(RegistryError, match="no model version 'v9'"):
        registry.get("v9")
    with pytest.raises(RegistryError, match="not a model bundle"):
        registry.add(tmp_path / "nothing-here")


def test_promote_and_rollback(registry: Registry) -> None:
    assert registry.pointer() == Pointer(None) and registry.active() is None
    registry.promote("v1")
    registry.promote("v3")
    assert registry.promote("v3") == Pointer("v3", ("v1",))  # promoting the active one changes nothing
    assert registry.active() is not None and registry.active().name == "v3"  # type: ignore[union-attr]
    assert registry.rollback() == Pointer("v1", ())
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    with pytest.raises(RegistryError, match="no model version"):
        registry.promote("v7")
    assert registry.pointer().version == "v1"


def test_what_serve_runs(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert serving_choice(None, registry.root) == (None, None)  # nothing promoted: the bundled model
    registry.promote("v2")
    assert serving_choice(None, registry.root) == (registry.get("v2").path, "v2")
    assert serving_choice(tmp_path / "x.tflite", registry.root) == (tmp_path / "x.tflite", None)
    monkeypatch.setenv("DIGITREC_MODELS", str(registry.root))
    assert resolve_models_dir() == registry.root


def test_models_cli(registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = ["--models-dir", str(registry.root)]
    assert main(["models", "promote", "v2", *folder]) == 0
    assert "active: v2" in capsys.readouterr().out
    assert main(["models", "list", "--json", *folder]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["active"] == "v2" and [v["version"] for v in listed["versions"]] == ["v1", "v2", "v3"]
    assert main(["models", "show", "v3", *folder]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"] == "c"
    assert main(["models", "add", str(fake_bundle(tmp_path / "d", "d")), "--promote", *folder]) == 0
    assert "added v4" in capsys.readouterr().out and registry.pointer().version == "v4"
    assert main(["models", "rollback", *folder]) == 0
    assert registry.pointer().version == "v2"
    assert main(["models", "list", *folder]) == 0
    assert "active: v2" in capsys.readouterr().out
    assert main(["models", "promote", "v9", *folder]) == 1
    error = capsys.readouterr().err
    assert "no model version 'v9'" in error and error.count("\n") == 1


def test_predict_reads_with_the_active_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`predict` without --model runs the registry's active version, as serve does; --model overrides it."""
    import shutil

    from digitrec.bundle import default_bundle_dir

    # The bundled model with a huge calibration temperature: the same readings, far lower confidences.
    softened = tmp_path / "softened"
    shutil.copytree(default_bundle_dir(), softened)
    metadata = json.loads((softened / "model.json").read_text())
    metadata["calibration"] = {**metadata.get("calibration", {}), "temperature": 50.0}
    (softened / "model.json").write_text(json.dumps(metadata))
    image = str(Path(__file__).resolve().parent.parent / "docs" / "examples" / "photo-digit.jpg")
    folder = ["--models-dir", str(tmp_path / "models")]

    def confidence(*extra: str) -> float:
        assert main(["predict", image, "--json", "--mode", "digit", "--jobs", "1", *folder, *extra]) == 0
        return json.loads(capsys.readouterr().out)[0]["confidence"]

    bundled = confidence()  # no version promoted yet: the bundled model
    assert bundled > 0.9
    registry = Registry(tmp_path / "models")
    registry.promote(registry.add(softened).name)
    assert confidence() < 0.5 * bundled
    assert confidence("--model", str(default_bundle_dir())) == bundled


PROMOTER = """
import sys
from digitrec.registry import Registry
registry = Registry(sys.argv[1])
for i in range(1_000_000):
    registry.promote("v1" if i % 2 else "v2")
    print(i, flush=True)
"""

ADDER = """
import sys
from digitrec.registry import Registry
registry = Registry(sys.argv[1])
while True:
    print(registry.add(sys.argv[2]).name, flush=True)
"""


def kill_after(script: str, lines: int, *args: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(lines):
        assert child.stdout.readline(), "the child stopped early"
    time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=30)


def test_kill_9_during_promotes_leaves_a_valid_pointer(registry: Registry) -> None:
    for _ in range(3):
        kill_after(PROMOTER, 40, str(registry.root))
        pointer = registry.pointer()  # whole JSON, one of the two versions: never half a file
        assert pointer.version in ("v1", "v2")
        assert set(pointer.history) <= {"v1", "v2"}
    registry.promote("v3")  # the lock was released with the dead process
    assert registry.pointer().version == "v3"


def test_kill_9_during_adds_leaves_only_whole_versions(registry: Registry, tmp_path: Path) -> None:
    big = fake_bundle(tmp_path / "big", "B", size=4_000_000)
    kill_after(ADDER, 2, str(registry.root), str(big))
    for version in registry.versions():
        if version.number > 3:
            assert (version.path / "model.tflite").stat().st_size == 4_000_000  # no half-copied version
    assert registry.add(big).number == registry.versions()[-1].number  # adding still works
