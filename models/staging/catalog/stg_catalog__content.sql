with

source as (

    select * from {{ source('catalog', 'content') }}

),

final as (

    select
        -- ids
        content_id,
        series_id,

        -- strings
        content_type,
        title,
        genre_code,
        maturity_rating,

        -- numerics
        season_number,
        episode_number,
        duration_sec as duration_seconds,

        -- booleans
        is_original,

        -- dates
        release_date,

        -- timestamps
        updated_at,
        loaded_at

    from source

)

select * from final
