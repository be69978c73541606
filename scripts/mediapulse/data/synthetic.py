"""The SQL that simulates MediaPulse's source systems, in DuckDB, vectorised.

Everything is a pure function of the seed, the population parameters and the start date:
randomness comes from ``hash(..., seed)``, never from a stateful generator, so any day can be
re-simulated on its own and gives the same rows. What a data set *contains* is then decided
by two cut-offs on ``loaded_at`` (see ``LoadWindow``): a full data set is everything loaded
up to its as-of time; ``--append-day`` adds what was loaded during the next day, which
includes late events of earlier days. N days + one appended day == N+1 days, row for row.

Only the generator uses DuckDB-specific SQL; the dbt models stay portable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time

# Reference data the simulation draws from. Country codes, currencies, plans, genres and
# devices must exist in the project's seeds; 'XX', 'ZZ' and 'UK' are the unknown codes real
# sign-up forms produce (UK is the classic mistake for GB) and are deliberately not in seeds.
# (code, weight, currency, local units per USD for list prices)
COUNTRIES: tuple[tuple[str, float, str, float], ...] = (
    ("US", 30.0, "USD", 1.0),
    ("GB", 8.0, "GBP", 0.79),
    ("DE", 7.0, "EUR", 0.92),
    ("FR", 5.0, "EUR", 0.92),
    ("ES", 3.5, "EUR", 0.92),
    ("IT", 3.5, "EUR", 0.92),
    ("NL", 2.0, "EUR", 0.92),
    ("IE", 1.0, "EUR", 0.92),
    ("SE", 1.5, "SEK", 10.5),
    ("NO", 1.0, "NOK", 10.6),
    ("DK", 1.0, "DKK", 6.9),
    ("PL", 2.0, "PLN", 4.0),
    ("BR", 6.0, "BRL", 5.0),
    ("MX", 4.0, "MXN", 17.0),
    ("AR", 1.5, "ARS", 350.0),
    ("CA", 4.0, "CAD", 1.36),
    ("IN", 5.0, "INR", 83.0),
    ("JP", 3.0, "JPY", 150.0),
    ("KR", 2.0, "KRW", 1330.0),
    ("AU", 2.5, "AUD", 1.52),
    ("NZ", 0.5, "NZD", 1.65),
    ("ZA", 1.0, "ZAR", 18.5),
    ("NG", 1.0, "NGN", 800.0),
    ("EG", 0.8, "EGP", 31.0),
    ("TR", 1.5, "TRY", 30.0),
    ("XX", 0.2, "USD", 1.0),
    ("ZZ", 0.1, "USD", 1.0),
    ("UK", 0.2, "GBP", 0.79),
)
# Currencies whose prices carry no minor unit.
WHOLE_UNIT_CURRENCIES = ("JPY", "KRW")
# (plan_code, weight, monthly list price in USD, shows ads)
PLANS: tuple[tuple[str, float, float, bool], ...] = (
    ("ad_supported", 0.45, 7.99, True),
    ("standard", 0.35, 15.49, False),
    ("premium", 0.20, 22.99, False),
)
DEVICES: tuple[tuple[str, float], ...] = (
    ("tv", 0.40),
    ("mobile", 0.25),
    ("web", 0.15),
    ("tablet", 0.10),
    ("console", 0.10),
)
ON_DEMAND_GENRES = (
    "drama",
    "comedy",
    "action",
    "documentary",
    "kids",
    "sci_fi",
    "thriller",
    "romance",
    "horror",
    "reality",
)
# Share of viewings watched to the end, by content type: the models must reproduce these.
COMPLETION_RATE = {"movie": 0.55, "episode": 0.75, "live": 0.35}
# Calibrates viewings per user-day so that events per user-day matches the requested mean.
EVENTS_PER_VIEWING = 57.0
SLOTS_PER_DAY = 4  # at most this many viewings per user per day
HEARTBEAT_S = 60
MIDROLL_EVERY_S = 900
# The longest a row can take to load after its viewing started (offline devices, 48 h,
# plus re-delivery and the viewing itself): re-simulating this many days before a load
# window finds every row loaded in it.
LATE_DAYS = 4
LIVE_SCHEDULE_DAYS = 180  # live events are scheduled over this many days from the start
CAMPAIGN_SCHEDULE_DAYS = 400
DUPLICATE_EVENT_RATE = 0.01
DUPLICATE_IMPRESSION_RATE = 0.005
OFFLINE_VIEWING_RATE = 0.02

_WORDS_A = (
    "Silent",
    "Broken",
    "Golden",
    "Hidden",
    "Last",
    "Crimson",
    "Distant",
    "Frozen",
    "Wild",
    "Electric",
    "Midnight",
    "Paper",
    "Iron",
    "Secret",
    "Burning",
    "Quiet",
)
_WORDS_B = (
    "Harbor",
    "Empire",
    "Garden",
    "Signal",
    "Frontier",
    "Orchard",
    "Kingdom",
    "Machine",
    "River",
    "Summer",
    "Witness",
    "Horizon",
    "Archive",
    "Circus",
)
_TEAMS = ("Lions", "Falcons", "Rovers", "United", "Sharks", "Titans", "Comets", "Wolves")
_FIRST = (
    "Ana",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
)
_LAST = (
    "Smith",
    "Garcia",
    "Müller",
    "Dubois",
    "Rossi",
    "Tanaka",
    "Kim",
    "Silva",
    "Novak",
    "Okafor",
    "Jensen",
    "Kowalski",
    "Patel",
    "Brown",
    "Lopez",
    "Yilmaz",
)


@dataclass(frozen=True)
class Population:
    """What the simulation depends on (everything but how many days have been loaded)."""

    seed: int
    users: int
    events_per_user_day: float
    start_date: date

    @property
    def content_count(self) -> int:
        return max(150, min(6000, self.users // 8))


@dataclass(frozen=True)
class LoadWindow:
    """Rows with ``after < loaded_at <= until`` (``after`` None: from the beginning)."""

    after: datetime | None
    until: datetime

    def simulated_days(self, start: date) -> range:
        """The day indexes whose viewings can have rows loaded inside this window."""
        first = 0 if self.after is None else max(0, (self.after.date() - start).days - LATE_DAYS)
        last = (self.until.date() - start).days  # until is midnight after the last day
        return range(first, max(first, last))


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _cumulative(rows: list[tuple[str, float]]) -> list[tuple[str, float, float]]:
    total = sum(w for _, w in rows)
    out, acc = [], 0.0
    for key, weight in rows:
        out.append((key, acc / total, (acc + weight) / total))
        acc += weight
    out[-1] = (out[-1][0], out[-1][1], 1.000001)
    return out


def _epoch(moment: datetime) -> int:
    return (
        int(moment.timestamp())
        if moment.tzinfo
        else int((moment - datetime(1970, 1, 1)).total_seconds())
    )


def setup_sql(pop: Population) -> list[str]:
    """Temp macros and reference tables every other statement uses."""
    countries = ",\n".join(
        f"('{code}', {lo!r}, {hi!r}, '{cur}', {factor!r})"
        for (code, lo, hi), (_, _, cur, factor) in zip(
            _cumulative([(c[0], c[1]) for c in COUNTRIES]), COUNTRIES, strict=True
        )
    )
    plans = ",\n".join(
        f"('{code}', {lo!r}, {hi!r}, {price!r}, {str(ads).lower()})"
        for (code, lo, hi), (_, _, price, ads) in zip(
            _cumulative([(p[0], p[1]) for p in PLANS]), PLANS, strict=True
        )
    )
    devices = ",\n".join(f"('{d}', {lo!r}, {hi!r})" for d, lo, hi in _cumulative(list(DEVICES)))
    return [
        # u(a, b, c): a uniform number in [0, 1), the same for the same arguments and seed.
        f"create or replace temp macro u(a, b, c) as hash(a, b, c, {int(pop.seed)}) "
        "/ 18446744073709551616.0",
        "create or replace temp macro pick(r, lst) as lst[1 + cast(floor(r * len(lst)) as int)]",
        "create or replace temp macro hex_id(a, b, c) as "
        f"lpad(lower(to_hex(hash(a, b, c, {int(pop.seed)}, 'id'))), 16, '0')",
        "create or replace temp macro ts(epoch_s) as "
        "make_timestamp(cast(epoch_s as bigint) * 1000000)",
        "create or replace temp table ref_countries as select * from (values "
        f"{countries}) v(code, lo, hi, currency, local_per_usd)",
        "create or replace temp table ref_plans as select * from (values "
        f"{plans}) v(plan_code, lo, hi, price_usd, has_ads)",
        f"create or replace temp table ref_devices as select * from (values {devices}) "
        "v(device, lo, hi)",
    ]


def population_sql(pop: Population) -> list[str]:
    """Users, content, subscription periods and campaigns over the whole simulated timeline."""
    start = _epoch(datetime.combine(pop.start_date, time()))
    day = 86400
    n = pop.content_count
    n_movies = round(n * 0.35)
    n_series = max(1, round(n * 0.5 / 8))
    n_episodes = n_series * 8
    n_live = max(2, n - n_movies - n_episodes)
    n_campaigns = max(40, CAMPAIGN_SCHEDULE_DAYS * 2 // 3)
    return [
        # -- accounts: 85 % existed before the start, the rest sign up over the next year.
        f"""
        create or replace temp table sim_users as
        with base as (
            select
                i as user_id,
                u(i, 'signup', 0) as r_signup,
                u(i, 'signup', 1) as r_when,
                u(i, 'country', 0) as r_country,
                u(i, 'activity', 0) as r_activity
            from range(1, {int(pop.users)} + 1) t(i)
        )
        select
            b.user_id,
            case when b.r_signup < 0.85
                then {start} - cast(b.r_when * 730 * {day} as bigint) - 3600
                else {start} + cast(b.r_when * 365 * {day} as bigint)
            end as signup_epoch,
            c.code as country_code,
            c.currency,
            c.local_per_usd,
            -- heavy and light viewers: weight 0.2 .. 1.8, mean 0.733
            0.2 + 1.6 * b.r_activity * b.r_activity as activity,
            d1.device as primary_device,
            d2.device as secondary_device,
            u(b.user_id, 'optin', 0) < 0.4 as marketing_opt_in,
            {start} + cast(u(b.user_id, 'optin', 1) * 365 * {day} as bigint) as optin_change_epoch,
            u(b.user_id, 'optin', 2) < 0.1 as optin_changes
        from base b
        join ref_countries c on b.r_country >= c.lo and b.r_country < c.hi
        join ref_devices d1
            on u(b.user_id, 'device', 1) >= d1.lo and u(b.user_id, 'device', 1) < d1.hi
        join ref_devices d2
            on u(b.user_id, 'device', 2) >= d2.lo and u(b.user_id, 'device', 2) < d2.hi
        """,
        # -- catalog: movies, series of 8 episodes (2 seasons x 4), live events on a schedule.
        f"""
        create or replace temp table sim_content as
        with ids as (
            select
                i as content_id,
                case
                    when i <= {n_movies} then 'movie'
                    when i <= {n_movies + n_episodes} then 'episode'
                    else 'live'
                end as content_type,
                case when i > {n_movies} and i <= {n_movies + n_episodes}
                    then 10000 + (i - {n_movies} - 1) // 8 + 1 end as series_id,
                (i - {n_movies} - 1) % 8 as ep_index
            from range(1, {n_movies + n_episodes + n_live} + 1) t(i)
        ),
        shaped as (
            select
                content_id,
                content_type,
                series_id,
                case when series_id is not null then ep_index // 4 + 1 end as season_number,
                case when series_id is not null then ep_index % 4 + 1 end as episode_number,
                coalesce(series_id, content_id) as title_key,
                case content_type
                    when 'movie' then 80 * 60 + cast(u(content_id, 'dur', 0) * 80 * 60 as int)
                    when 'episode' then 22 * 60 + cast(u(series_id, 'dur', 0) * 38 * 60 as int)
                    else 90 * 60 + cast(u(content_id, 'dur', 0) * 90 * 60 as int)
                end as duration_sec,
                case content_type
                    when 'live' then case when u(content_id, 'genre', 0) < 0.8
                        then 'sports' else 'news' end
                    else pick(u(coalesce(series_id, content_id), 'genre', 0),
                              {_sql_list(ON_DEMAND_GENRES)})
                end as genre_code,
                case content_type
                    when 'live' then {start} - 10 * {day}
                        + cast(u(content_id, 'air', 0) * {LIVE_SCHEDULE_DAYS} as bigint) * {day}
                        + (17 + cast(u(content_id, 'air', 1) * 5 as bigint)) * 3600
                    else {start} - cast((1 + u(coalesce(series_id, content_id), 'rel', 0) * 3650)
                        as bigint) * {day}
                end as release_epoch,
                u(coalesce(series_id, content_id), 'orig', 0) < 0.2 as is_original,
                pick(u(coalesce(series_id, content_id), 'rating', 0),
                     ['G', 'PG', 'PG-13', 'R', 'TV-MA']) as maturity_rating,
                content_type <> 'live' and u(content_id, 'upd', 0) < 0.15 as has_update,
                {start} + cast(u(content_id, 'upd', 1) * 365 * {day} as bigint) as update_epoch
            from ids
        )
        select
            *,
            case content_type
                when 'movie' then 'The ' || pick(u(title_key, 'ta', 0), {_sql_list(_WORDS_A)})
                    || ' ' || pick(u(title_key, 'tb', 0), {_sql_list(_WORDS_B)})
                when 'episode' then pick(u(title_key, 'ta', 0), {_sql_list(_WORDS_A)}) || ' '
                    || pick(u(title_key, 'tb', 0), {_sql_list(_WORDS_B)})
                    || ' S' || season_number || 'E' || episode_number
                else 'Live: ' || pick(u(content_id, 'team', 0), {_sql_list(_TEAMS)}) || ' vs '
                    || pick(u(content_id, 'team', 1), {_sql_list(_TEAMS)})
            end as title,
            -- live events are announced two weeks ahead; the back catalogue long before
            case when content_type = 'live' then release_epoch - 14 * {day}
                else release_epoch - 30 * {day} end as created_epoch,
            row_number() over (
                partition by content_type = 'live' order by u(content_id, 'pop', 0)
            ) as popularity_rank
        from shaped
        """,
        # -- billing: up to three periods per account, ended by cancellation or a plan switch.
        f"""
        create or replace temp table sim_periods as
        with first_period as (
            select
                s.user_id,
                1 as period_no,
                s.signup_epoch + cast(u(s.user_id, 'p1', 0) * 3 * {day} as bigint) as start_epoch,
                p.plan_code,
                u(s.user_id, 'p1', 1) as r_outcome,
                u(s.user_id, 'p1', 2) as r_length
            from sim_users s
            join ref_plans p on u(s.user_id, 'plan', 1) >= p.lo and u(s.user_id, 'plan', 1) < p.hi
        ),
        first_ended as (
            select
                *,
                case when r_outcome < 0.12 then 'cancelled' when r_outcome < 0.30 then 'switched'
                    end as end_reason,
                case when r_outcome < 0.30
                    then start_epoch + cast((30 + r_length * 300) * {day} as bigint)
                    end as end_epoch
            from first_period
        ),
        second_period as (
            select
                user_id,
                2 as period_no,
                end_epoch as start_epoch,
                case plan_code when 'ad_supported' then 'standard'
                    when 'standard' then case when u(user_id, 'p2', 0) < 0.5
                        then 'premium' else 'ad_supported' end
                    else 'standard' end as plan_code,
                u(user_id, 'p2', 1) as r_outcome,
                u(user_id, 'p2', 2) as r_length
            from first_ended
            where end_reason = 'switched'
        ),
        second_ended as (
            select
                *,
                case when r_outcome < 0.15 then 'cancelled' when r_outcome < 0.25 then 'switched'
                    end as end_reason,
                case when r_outcome < 0.25
                    then start_epoch + cast((30 + r_length * 300) * {day} as bigint)
                    end as end_epoch
            from second_period
        ),
        third_period as (
            select
                user_id,
                3 as period_no,
                end_epoch as start_epoch,
                case when plan_code = 'premium' then 'standard' else 'premium' end as plan_code,
                case when u(user_id, 'p3', 1) < 0.2 then 'cancelled' end as end_reason,
                case when u(user_id, 'p3', 1) < 0.2 then end_epoch
                    + cast((30 + u(user_id, 'p3', 2) * 300) * {day} as bigint) end as end_epoch
            from second_ended
            where end_reason = 'switched'
        ),
        periods as (
            select user_id, period_no, start_epoch, plan_code, end_reason, end_epoch
            from first_ended
            union all
            select user_id, period_no, start_epoch, plan_code, end_reason, end_epoch
            from second_ended
            union all
            select user_id, period_no, start_epoch, plan_code, end_reason, end_epoch
            from third_period
        )
        select
            p.user_id * 10 + p.period_no as subscription_id,
            p.*,
            pl.has_ads,
            s.currency,
            case when s.currency in {WHOLE_UNIT_CURRENCIES!r}
                then round(pl.price_usd * s.local_per_usd, -1)
                else floor(pl.price_usd * s.local_per_usd) + 0.99
            end as price_amount
        from periods p
        join sim_users s using (user_id)
        join ref_plans pl using (plan_code)
        """,
        # -- ads: one new campaign every ~1.5 days, each 21-60 days long, booked to the audience.
        f"""
        create or replace temp table sim_campaigns as
        select
            i as campaign_id,
            pick(u(i, 'adv', 0), ['Acme Foods', 'Northwind Auto', 'Blue Peak Telecom',
                'Fable Games', 'Helios Energy', 'Lumen Bank', 'Orbit Travel', 'Pine Apparel',
                'Quanta Phones', 'Riverstone Insurance']) as advertiser_name,
            pick(u(i, 'cname', 0), ['Spring Launch', 'Brand Awareness', 'Holiday Push',
                'New Model', 'Back to School', 'Summer Sale', 'Loyalty']) || ' ' || i
                as campaign_name,
            {start} - 60 * {day} + cast((i - 1) * 1.5 * {day} as bigint) as start_epoch,
            21 + cast(u(i, 'len', 0) * 40 as int) as length_days,
            round(6 + u(i, 'cpm', 0) * 39, 2) as cpm_usd,
            case when u(i, 'len', 1) < 0.5 then 15 else 30 end as ad_duration_sec,
            greatest(1000, cast({int(pop.users)} * (0.5 + u(i, 'tgt', 0)) * 3 as bigint))
                as target_impressions
        from range(1, {n_campaigns} + 1) t(i)
        """,
    ]


def viewings_sql(pop: Population, days: range) -> str:
    """One row per viewing (a user playing one title on one device) starting on ``days``."""
    start = _epoch(datetime.combine(pop.start_date, time()))
    day = 86400
    per_slot = pop.events_per_user_day / EVENTS_PER_VIEWING / SLOTS_PER_DAY / 0.7333
    return f"""
    create or replace temp table sim_viewings as
    with slots as (
        select
            s.user_id,
            d.day_index,
            k.slot,
            s.activity,
            s.primary_device,
            s.secondary_device,
            {start} + d.day_index * {day} as day_epoch
        from sim_users s
        cross join range({days.start}, {days.stop}) d(day_index)
        cross join range({SLOTS_PER_DAY}) k(slot)
        where u(s.user_id * 1000 + k.slot, 'view', d.day_index)
            < least(0.95, {per_slot!r} * s.activity)
    ),
    timed as (
        select
            *,
            hash(user_id, day_index, slot, {int(pop.seed)}) as viewing_key,
            u(user_id * 1000 + slot, 'hour', day_index) as r_hour,
            u(user_id * 1000 + slot, 'minute', day_index) as r_minute
        from slots
    ),
    started as (
        select
            *,
            day_epoch + cast(3600 * case
                when r_hour < 0.60 then 18 + r_hour / 0.60 * 5.5
                when r_hour < 0.85 then 12 + (r_hour - 0.60) / 0.25 * 6
                else (r_hour - 0.85) / 0.15 * 12
            end as bigint) + cast(r_minute * 60 as bigint) as start_epoch
        from timed
    ),
    subscribed as (
        -- only paying accounts watch; the plan in force decides whether ads are served
        select st.*, p.has_ads
        from started st
        join sim_users us on us.user_id = st.user_id and us.signup_epoch <= st.start_epoch
        join sim_periods p
            on p.user_id = st.user_id
            and p.start_epoch <= st.start_epoch
            and (p.end_epoch is null or p.end_epoch > st.start_epoch)
    ),
    live_today as (
        select
            release_epoch // {day} as air_day,
            content_id,
            row_number() over (partition by release_epoch // {day} order by content_id) - 1 as k,
            count(*) over (partition by release_epoch // {day}) as n_live
        from sim_content
        where content_type = 'live'
    ),
    on_demand_count as (
        select count(*) as n from sim_content where content_type <> 'live'
    ),
    chosen as (
        select
            s.*,
            coalesce(
                case when u(s.viewing_key, 'live', 0) < 0.15 then lt.content_id end,
                od.content_id
            ) as content_id,
            case when u(s.viewing_key, 'device', 0) < 0.7
                then s.primary_device else s.secondary_device end as device_type
        from subscribed s
        cross join on_demand_count n
        left join live_today lt
            on lt.air_day = s.start_epoch // {day}
            and lt.k = cast(floor(u(s.viewing_key, 'live', 1) * lt.n_live) as bigint)
        join sim_content od
            on od.content_type <> 'live'
            and od.popularity_rank
                = 1 + cast(floor(n.n * pow(u(s.viewing_key, 'title', 0), 2.2)) as bigint)
    ),
    behaviour as (
        select
            c.viewing_key,
            c.user_id,
            c.day_index,
            c.content_id,
            c.device_type,
            c.has_ads,
            ct.content_type,
            ct.duration_sec,
            -- live events can only be watched from their start
            greatest(c.start_epoch, case when ct.content_type = 'live'
                then ct.release_epoch else c.start_epoch end) as start_epoch,
            u(c.viewing_key, 'complete', 0) < case ct.content_type
                when 'movie' then {COMPLETION_RATE["movie"]}
                when 'episode' then {COMPLETION_RATE["episode"]}
                else {COMPLETION_RATE["live"]} end as completes,
            u(c.viewing_key, 'watch', 0) as r_watch,
            u(c.viewing_key, 'seek', 0) < 0.15 as seeks,
            60 + cast(u(c.viewing_key, 'seek', 1) * 540 as int) as seek_jump,
            u(c.viewing_key, 'seek', 2) as r_seek_at,
            u(c.viewing_key, 'pause', 0) < 0.30 as pauses,
            u(c.viewing_key, 'pause', 1) as r_pause_at,
            case when u(c.viewing_key, 'pause', 2) < 0.12
                then 1900 + cast(u(c.viewing_key, 'pause', 3) * 5300 as int)
                else 30 + cast(u(c.viewing_key, 'pause', 3) * 870 as int)
            end as pause_len,
            case when u(c.viewing_key, 'offline', 0) < {OFFLINE_VIEWING_RATE}
                then 6 * 3600 + cast(u(c.viewing_key, 'offline', 1) * 42 * 3600 as int)
            end as offline_delay
        from chosen c
        join sim_content ct using (content_id)
    )
    ,
    played as (
        select
            *,
            case when seeks then least(seek_jump, duration_sec // 2) else 0 end as jump,
            -- seconds of playback: to the end (less what a seek skipped) or until the stop
            case
                when completes then duration_sec
                    - case when seeks then least(seek_jump, duration_sec // 2) else 0 end
                else greatest(60, cast(duration_sec * (0.05 + 0.9 * r_watch * r_watch) as int))
            end as playback_sec
        from behaviour
    )
    select
        *,
        -- a seek lands between heartbeats, a pause on the half minute, never on an event
        case when seeks then 15 + cast(r_seek_at * greatest(playback_sec - 60, 1) as int)
            end as seek_at,
        case when pauses
            then 30 + 60 * cast(r_pause_at * greatest(playback_sec // 60 - 1, 0) as int)
            end as pause_at
    from played
    """


def events_sql(window: LoadWindow) -> str:
    """streaming.watch_events rows loaded inside ``window``, in load order."""
    return f"""
    with v as (
        select * from sim_viewings
    ),
    timeline as (
        -- playback second -> (event type, ordinal); wall-clock time and play-head derive below
        select viewing_key, 'play' as event_type, 0 as ordinal, 0 as at_sec from v
        union all
        select viewing_key, 'heartbeat', h, h * {HEARTBEAT_S}
        from (
            select viewing_key, unnest(range(1, (playback_sec - 1) // {HEARTBEAT_S} + 1)) as h
            from v
        )
        union all
        select viewing_key, 'pause', 0, pause_at from v where pauses and pause_at < playback_sec
        union all
        select viewing_key, 'resume', 0, pause_at from v where pauses and pause_at < playback_sec
        union all
        select viewing_key, 'seek', 0, seek_at from v where seeks and seek_at < playback_sec
        union all
        select viewing_key, case when completes then 'complete' else 'stop' end, 0, playback_sec
        from v
    ),
    placed as (
        select
            t.viewing_key,
            t.event_type,
            t.ordinal,
            v.user_id,
            v.content_id,
            v.device_type,
            v.start_epoch + t.at_sec
                + case when v.pauses and (t.at_sec > v.pause_at
                    or (t.at_sec = v.pause_at and t.event_type = 'resume'))
                    then v.pause_len else 0 end as event_epoch,
            least(v.duration_sec, t.at_sec + case when v.seeks and (t.at_sec > v.seek_at
                or (t.at_sec = v.seek_at and t.event_type = 'seek')) then v.jump else 0 end)
                as position_sec,
            v.offline_delay,
            v.playback_sec,
            v.pause_len
        from timeline t
        join v using (viewing_key)
    ),
    loaded as (
        select
            hex_id(viewing_key, event_type, ordinal) as event_id,
            user_id,
            content_id,
            device_type,
            event_type,
            event_epoch,
            position_sec,
            case
                -- an offline device uploads the whole viewing once it reconnects
                when offline_delay is not null
                    then max(event_epoch) over (partition by viewing_key) + offline_delay
                else event_epoch + 20 + cast(u(viewing_key, event_type, ordinal) * 580 as int)
            end as loaded_epoch
        from placed
    ),
    delivered as (
        select * from loaded
        union all
        -- at-least-once delivery: the same event again, a few minutes to two hours later
        select
            event_id, user_id, content_id, device_type, event_type, event_epoch, position_sec,
            loaded_epoch + 300 + cast(u(event_id, 'dup', 1) * 6900 as int)
        from loaded
        where u(event_id, 'dup', 0) < {DUPLICATE_EVENT_RATE}
    )
    select
        event_id,
        user_id,
        content_id,
        device_type,
        event_type,
        ts(event_epoch) as event_ts,
        cast(position_sec as integer) as position_sec,
        ts(loaded_epoch) as loaded_at
    from delivered
    where {_window_filter(window, "loaded_epoch")}
    order by loaded_epoch, event_id
    """


def impressions_sql(window: LoadWindow) -> str:
    """ads.ad_impressions rows loaded inside ``window``: breaks inside ad-supported viewings."""
    return f"""
    with v as (
        select * from sim_viewings where has_ads
    ),
    breaks as (
        select viewing_key, 'preroll' as ad_position, 0 as ordinal, 0 as at_sec from v
        union all
        select viewing_key, 'midroll', m, m * {MIDROLL_EVERY_S}
        from (
            select viewing_key, unnest(range(1, (playback_sec - 1) // {MIDROLL_EVERY_S} + 1)) as m
            from v
        )
        union all
        select viewing_key, 'postroll', 0, playback_sec from v where completes
    ),
    campaign_days as (
        select
            c.campaign_id,
            c.cpm_usd,
            c.ad_duration_sec,
            d.day_epoch,
            row_number() over (partition by d.day_epoch order by c.campaign_id) - 1 as k,
            count(*) over (partition by d.day_epoch) as n_active
        from sim_campaigns c
        join (select distinct (start_epoch // 86400) * 86400 as day_epoch from v) d
            on d.day_epoch >= c.start_epoch and d.day_epoch < c.start_epoch + c.length_days * 86400
    ),
    served as (
        select
            b.viewing_key,
            b.ad_position,
            b.ordinal,
            v.user_id,
            v.content_id,
            v.device_type,
            v.offline_delay,
            v.start_epoch + b.at_sec
                + case when v.pauses and b.at_sec > v.pause_at then v.pause_len else 0 end
                as served_epoch,
            (v.start_epoch // 86400) * 86400 as day_epoch,
            u(b.viewing_key, b.ad_position, b.ordinal) as r_campaign
        from breaks b
        join v using (viewing_key)
    ),
    booked as (
        select
            hex_id(s.viewing_key, s.ad_position, 'imp' || s.ordinal) as impression_id,
            s.user_id,
            s.content_id,
            cd.campaign_id,
            s.device_type,
            s.served_epoch,
            s.ad_position,
            cd.ad_duration_sec,
            u(s.viewing_key, 'done', s.ordinal)
                < case when s.device_type = 'mobile' then 0.78 else 0.88 end as is_completed,
            u(s.viewing_key, 'click', s.ordinal) < 0.012 as is_clicked,
            cd.cpm_usd,
            case when s.offline_delay is not null then s.served_epoch + s.offline_delay
                else s.served_epoch + 20 + cast(u(s.viewing_key, 'adload', s.ordinal) * 580 as int)
            end as loaded_epoch
        from served s
        join campaign_days cd
            on cd.day_epoch = s.day_epoch
            and cd.k = cast(floor(s.r_campaign * cd.n_active) as bigint)
    ),
    delivered as (
        select * from booked
        union all
        select
            impression_id, user_id, content_id, campaign_id, device_type, served_epoch,
            ad_position, ad_duration_sec, is_completed, is_clicked, cpm_usd,
            loaded_epoch + 300 + cast(u(impression_id, 'dup', 1) * 6900 as int)
        from booked
        where u(impression_id, 'dup', 0) < {DUPLICATE_IMPRESSION_RATE}
    )
    select
        impression_id,
        user_id,
        content_id,
        campaign_id,
        device_type,
        ts(served_epoch) as served_ts,
        ad_position,
        cast(ad_duration_sec as integer) as ad_duration_sec,
        is_completed,
        is_clicked,
        -- CPM is per thousand completed impressions: cpm_usd / 1000 USD = cpm_usd * 1000 micros
        cast(case when is_completed then round(cpm_usd * 1000) else 0 end as bigint)
            as revenue_micros,
        ts(loaded_epoch) as loaded_at
    from delivered
    where {_window_filter(window, "loaded_epoch")}
    order by loaded_epoch, impression_id
    """


def _window_filter(window: LoadWindow, column: str) -> str:
    until = f"{column} <= {_epoch(window.until)}"
    if window.after is None:
        return until
    return f"{column} > {_epoch(window.after)} and {until}"


def current_state_sql(as_of: datetime) -> dict[str, str]:
    """The slowly changing tables as their source systems show them at ``as_of``."""
    cut = _epoch(as_of)
    return {
        "accounts.users": f"""
            select
                user_id,
                'user' || user_id || '@' || pick(u(user_id, 'mail', 0),
                    ['example.com', 'mail.example', 'inbox.example']) as email,
                pick(u(user_id, 'first', 0), {_sql_list(_FIRST)}) || ' '
                    || pick(u(user_id, 'last', 0), {_sql_list(_LAST)}) as full_name,
                cast(ts(signup_epoch) as date) - cast(365.25 * (18 + u(user_id, 'age', 0) * 52)
                    as integer) as birth_date,
                country_code,
                ts(signup_epoch) as signup_ts,
                case when optin_changes and optin_change_epoch <= {cut}
                    then not marketing_opt_in else marketing_opt_in end as marketing_opt_in,
                ts(case when optin_changes and optin_change_epoch <= {cut}
                    then greatest(optin_change_epoch, signup_epoch) else signup_epoch end)
                    as updated_at
            from sim_users
            where signup_epoch <= {cut}
        """,
        "catalog.content": f"""
            select
                content_id,
                content_type,
                case when has_update and update_epoch <= {cut}
                    then title || case when content_type = 'movie' then ' (Remastered)'
                        else ' (Extended)' end
                    else title end as title,
                series_id,
                cast(season_number as integer) as season_number,
                cast(episode_number as integer) as episode_number,
                case when has_update and update_epoch <= {cut} and u(content_id, 'regenre', 0) < 0.5
                    then pick(u(content_id, 'regenre', 1), {_sql_list(ON_DEMAND_GENRES)})
                    else genre_code end as genre_code,
                cast(duration_sec as integer) as duration_sec,
                cast(ts(release_epoch) as date) as release_date,
                is_original,
                maturity_rating,
                ts(case when has_update and update_epoch <= {cut}
                    then update_epoch else created_epoch end) as updated_at
            from sim_content
            where created_epoch <= {cut}
        """,
        "billing.subscriptions": f"""
            select
                subscription_id,
                user_id,
                plan_code,
                case when end_epoch is not null and end_epoch <= {cut}
                    then end_reason else 'active' end as status,
                ts(start_epoch) as started_at,
                case when end_epoch <= {cut} then ts(end_epoch) end as ended_at,
                cast(price_amount as decimal(12, 2)) as price_amount,
                currency,
                ts(case when end_epoch <= {cut} then end_epoch else start_epoch end)
                    as updated_at
            from sim_periods
            where start_epoch <= {cut}
        """,
        "ads.campaigns": f"""
            select
                campaign_id,
                advertiser_name,
                campaign_name,
                cast(ts(start_epoch) as date) as start_date,
                cast(ts(start_epoch) as date) + (length_days - 1) as end_date,
                cast(cpm_usd as decimal(10, 2)) as cpm_usd,
                cast(round(target_impressions * cpm_usd / 1000, 2) as decimal(14, 2))
                    as budget_usd,
                target_impressions,
                ts(start_epoch - 7 * 86400) as updated_at
            from sim_campaigns
            where start_epoch - 7 * 86400 <= {cut}
        """,
    }
