"""Every macro and every seed of the project is documented as dbt's documentation expects.

A macro's description is what `dbt docs` shows for it, and the only place that says what it is
for without reading its Jinja; a seed's description says what its rows are, and its owner who
to ask before changing them. Owners are written as models write them: a `group`
(models/_groups.yml names each group's owner). Properties live in one YAML per folder, as in
models/: `_<folder>__macros.yml` beside the macros (`_macros.yml` for macros/ itself), and
seeds/_seeds.yml. Read from the manifest of a plain `dbt parse`, so no warehouse is built.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

pytestmark = pytest.mark.dbt


def _project(manifest: dict) -> str:
    return str(manifest["metadata"]["project_name"])


def _properties_file(node: dict, root_folder: str, kind: str) -> str:
    """The YAML that documents ``node``: its folder's ``_<folder>__<kind>.yml``, or
    ``_<kind>.yml`` for the resource's top folder itself."""
    folder = PurePosixPath(node["original_file_path"]).parent
    if str(folder) == root_folder:
        return f"{folder}/_{kind}.yml"
    return f"{folder}/_{folder.name}__{kind}.yml"


def _documented_in(node: dict) -> str | None:
    """The YAML the manifest says ``node``'s properties came from (``package://path``)."""
    patch = node.get("patch_path")
    return patch.split("://", 1)[1] if patch else None


def test_every_macro_has_a_description_in_its_folders_yaml(parsed_manifest: dict) -> None:
    project = _project(parsed_manifest)
    macros = [m for m in parsed_manifest["macros"].values() if m["package_name"] == project]
    assert macros, f"no macro of package {project} in the manifest"
    problems = []
    for macro in sorted(macros, key=lambda m: (m["original_file_path"], m["name"])):
        expected = _properties_file(macro, "macros", "macros")
        where = f"macro {macro['name']} ({macro['original_file_path']})"
        if not (macro.get("description") or "").strip():
            problems.append(f"{where} has no description: add it to {expected}")
        elif _documented_in(macro) != expected:
            problems.append(
                f"{where} is documented in {_documented_in(macro)}: move it to {expected}"
            )
    assert not problems, f"{len(problems)} macro(s):\n" + "\n".join(problems)


def test_every_seed_has_a_description_and_an_owner(parsed_manifest: dict) -> None:
    project = _project(parsed_manifest)
    groups = parsed_manifest.get("groups", {})
    seeds = [
        n for n in parsed_manifest["nodes"].values()
        if n["resource_type"] == "seed" and n["package_name"] == project
    ]  # fmt: skip
    assert seeds, f"no seed of package {project} in the manifest"
    problems = []
    for seed in sorted(seeds, key=lambda n: n["name"]):
        documented_in = _documented_in(seed)
        own_yaml = _properties_file(seed, "seeds", "seeds")
        # a seed that replaces a package's (dbt_project_evaluator_exceptions) takes that
        # package's properties, and a second entry in our YAML is a parse error: its config
        # goes in dbt_project.yml instead
        foreign = documented_in is not None and not seed["patch_path"].startswith(f"{project}://")
        where = f"seed {seed['name']} ({seed['original_file_path']})"
        if not (seed.get("description") or "").strip():
            problems.append(f"{where} has no description: add it to {documented_in or own_yaml}")
        group = seed["config"].get("group")
        owner = (groups.get(f"group.{project}.{group}") or {}).get("owner") or {}
        if not (owner.get("email") or owner.get("name")):
            place = (
                f"dbt_project.yml (seeds: {project}: {seed['name']}: +group:), as its "
                f"properties come from {seed['patch_path']}"
                if foreign
                else f"{own_yaml} (config: group:)"
            )
            state = f"is in group {group!r}, which has no owner" if group else "has no owner"
            problems.append(f"{where} {state}: give it a group of models/_groups.yml in {place}")
    assert not problems, f"{len(problems)} seed problem(s):\n" + "\n".join(problems)
