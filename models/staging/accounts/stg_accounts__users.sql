{#
    A table instead of the staging folder's view: the e-mail hash needs the secret key, which
    only the build has (the pre-hook puts it in a session variable, see
    macros/pii/keyed_hash.sql); whoever reads the table needs no key.
#}
{{
    config(
        materialized='table',
        pre_hook="{{ set_pii_hash_key() }}",
    )
}}

with

source as (

    select * from {{ source('accounts', 'users') }}

),

final as (

    select
        -- ids
        user_id,

        -- strings
        -- Personal data stops here: the e-mail is kept only as a keyed hash (normalised first,
        -- so the same address always gives the same hash), the name is dropped.
        {{ keyed_hash('lower(trim(email))') }} as email_hash,
        country_code,

        -- numerics
        cast(extract(year from birth_date) as {{ dbt.type_int() }}) as birth_year,

        -- booleans
        marketing_opt_in as is_marketing_opted_in,

        -- timestamps
        signup_ts as signed_up_at,
        updated_at,
        loaded_at

    from source

)

select * from final
