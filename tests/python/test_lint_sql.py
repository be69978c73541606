"""`mediapulse lint-sql` (`make lint-sql`): sqlfluff, through dbt, holds the SQL to the house shape.

Run as a contributor runs it, on a fresh copy of the project (no warehouse, no build): a model
in the shape of the others passes, and one that departs from it is named with each rule.
"""

from __future__ import annotations

import pytest

from mediapulse.project import Project

from .test_cli import run_cli

PROBE = "models/marts/ads/fct_lint_probe.sql"

HOUSE_SHAPE = """\
with

campaigns as (

    select * from {{ ref('stg_ads__campaigns') }}

),

delivery as (

    select * from {{ ref('fct_ad_impressions') }}

),

final as (

    select
        -- ids
        campaigns.campaign_id,

        -- numerics
        count(*) as impressions_count

    from campaigns
    inner join delivery
        on campaigns.campaign_id = delivery.campaign_id
    group by campaigns.campaign_id

)

select * from final
"""

# The same model with the departures the rules exist for: upper-case keywords, a bare join,
# an alias without `as`, a leading comma, group by position.
DEPARTING = """\
with

campaigns as (

    SELECT * from {{ ref('stg_ads__campaigns') }}

),

delivery as (

    select * from {{ ref('fct_ad_impressions') }}

),

final as (

    select
        campaigns.campaign_id
        , count(*) impressions_count

    from campaigns
    join delivery
        on campaigns.campaign_id = delivery.campaign_id
    group by 1

)

select * from final
"""


@pytest.mark.dbt
def test_lint_sql_passes_the_house_shape_and_names_each_departure(project_copy: Project) -> None:
    root = project_copy.root
    probe = root / PROBE

    probe.write_text(DEPARTING)
    found = run_cli("lint-sql", PROBE, cwd=root)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"== [{PROBE}] FAIL" in found.stdout, found.stdout
    for rule in ("CP01", "AM05", "AL02", "LT04", "AM06"):
        assert f"| {rule} |" in found.stdout, f"{rule} not reported:\n{found.stdout}"

    probe.write_text(HOUSE_SHAPE)
    clean = run_cli("lint-sql", PROBE, cwd=root)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "FAIL" not in clean.stdout

    # linting needs no data: it never created the checkout's warehouse or dbt's target files
    assert not (root / "warehouse").exists()
    assert sorted(p.name for p in (root / "target").iterdir()) == ["sqlfluff"]
