-- Superset reads as `sentencify_reader` (created by an administrator; the local stack does it).
-- Run by the owner of the schema, after the views exist. Nothing happens when the role is absent.
do $$ begin
    if exists (select 1 from pg_roles where rolname = 'sentencify_reader') then
        grant usage on schema sentencify to sentencify_reader;
        grant select on all tables in schema sentencify to sentencify_reader;
        alter default privileges in schema sentencify grant select on tables to sentencify_reader;
    end if;
end $$;
