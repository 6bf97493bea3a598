"""Shared test fixtures: the reference data folder, one torch thread, the repo root.

The reference data (`../shared/reference`: state-dict manifests, golden outputs of the
original implementation, the released YAML files) is not part of the project. Tests that need
it skip with a reason when it is absent; CI sets `LDM_REQUIRE_REFERENCE=1`, which turns those
skips into failures so that a missing folder cannot pass silently.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("LDM_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))

torch.set_num_threads(1)


def _missing_reference(what: str) -> None:
    message = f"reference data not found: {what} (set LDM_REFERENCE_DIR or check out ../shared)"
    if os.environ.get("LDM_REQUIRE_REFERENCE") == "1":
        pytest.fail(message + "; LDM_REQUIRE_REFERENCE=1 makes this a failure", pytrace=False)
    pytest.skip(message)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under LDM_REQUIRE_REFERENCE=1 a missing reference folder stops the run at once: tests
    parametrized over its files would otherwise collect nothing and pass silently."""
    if os.environ.get("LDM_REQUIRE_REFERENCE") == "1" and not REFERENCE_DIR.is_dir():
        raise pytest.UsageError(f"reference data not found: {REFERENCE_DIR} (LDM_REQUIRE_REFERENCE=1)")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """`../shared/reference`; skips (or fails under LDM_REQUIRE_REFERENCE=1) when absent."""
    if not REFERENCE_DIR.is_dir():
        _missing_reference(str(REFERENCE_DIR))
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def load_golden(reference_dir: Path):
    """`load_golden("unet_xattn")` -> the fixture dict of `golden/unet_xattn.pt`."""
    cache: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in cache:
            path = reference_dir / "golden" / f"{name}.pt"
            if not path.is_file():
                _missing_reference(str(path))
            cache[name] = torch.load(path, map_location="cpu", weights_only=True)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def load_manifest(reference_dir: Path):
    """`load_manifest("first_stage_kl-f8")` -> the parsed manifest JSON."""
    import json

    def load(name: str) -> dict:
        path = reference_dir / "manifests" / f"{name}.json"
        if not path.is_file():
            _missing_reference(str(path))
        return json.loads(path.read_text())

    return load


def assert_close_to_reference(actual: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5,
                              name: str = "tensor") -> None:
    """The reference README's tolerance: |a - b| <= rel * max|ref| + 1e-6 (integers exactly)."""
    actual = actual.detach().cpu()
    ref = ref.detach().cpu()
    assert actual.shape == ref.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
    if not ref.is_floating_point():
        assert torch.equal(actual.to(ref.dtype), ref), f"{name}: integer values differ"
        return
    tol = rel * ref.abs().max().item() + 1e-6
    err = (actual.double() - ref.double()).abs().max().item()
    assert err <= tol, f"{name}: max abs error {err:.3g} > tolerance {tol:.3g}"


@pytest.fixture(scope="session")
def assert_matches_reference():
    """The tolerance check of the reference README as a fixture (see assert_close_to_reference)."""
    return assert_close_to_reference
