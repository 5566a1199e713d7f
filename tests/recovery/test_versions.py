"""Package versions recorded beside results (recovery/versions.py)."""

from __future__ import annotations

import platform

from paser.recovery.versions import package_versions


def test_versions_come_in_the_order_asked_with_python_as_the_interpreter():
    versions = package_versions(["python", "trl", "torch"])
    assert list(versions) == ["python", "trl", "torch"]
    assert versions["python"] == platform.python_version()
    assert versions["trl"] == "1.16.0"


def test_a_package_that_is_not_installed_is_recorded_as_such():
    assert package_versions(["no-such-distribution-paser-test"]) == {"no-such-distribution-paser-test": "not installed"}
