with

content as (

    select * from {{ ref('stg_catalog__content') }}

),

genres as (

    select * from {{ ref('genres') }}

),

series_sizes as (

    select
        series_id,
        count(distinct season_number) as series_seasons_count,
        count(*) as series_episodes_count

    from content
    where series_id is not null
    group by series_id

),

final as (

    select
        -- ids
        content.content_id,
        content.series_id,

        -- strings
        content.content_type,
        content.title,
        content.genre_code,
        coalesce(genres.genre_name, 'Unknown') as genre_name,
        content.maturity_rating,

        -- numerics
        content.season_number,
        content.episode_number,
        cast(series_sizes.series_seasons_count as {{ dbt.type_bigint() }})
            as series_seasons_count,
        cast(series_sizes.series_episodes_count as {{ dbt.type_bigint() }})
            as series_episodes_count,
        content.duration_seconds,

        -- booleans
        content.is_original,
        content.content_type = 'episode' as is_episode,

        -- dates
        content.release_date,

        -- timestamps
        content.updated_at

    from content
    left join genres
        on content.genre_code = genres.genre_code
    left join series_sizes
        on content.series_id = series_sizes.series_id

)

select * from final
