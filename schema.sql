-- PromoStream schema: the two contract tables (../shared/contract/README.md) and the indexes the pipeline needs.
-- Idempotent: safe to apply to a fresh database or to one where the tables already exist with the contract's shape.

CREATE TABLE IF NOT EXISTS public.subscribers_restaurants (
    id            serial4 NOT NULL,
    client_id     varchar NOT NULL,
    restaurant_id varchar NOT NULL,
    CONSTRAINT pk_id PRIMARY KEY (id)
);

CREATE TABLE IF NOT EXISTS public.subscribers_feedback (
    id                          serial4 NOT NULL,
    restaurant_id               text    NOT NULL,
    adv_campaign_id             text    NOT NULL,
    adv_campaign_content        text    NOT NULL,
    adv_campaign_owner          text    NOT NULL,
    adv_campaign_owner_contact  text    NOT NULL,
    adv_campaign_datetime_start int8    NOT NULL,
    adv_campaign_datetime_end   int8    NOT NULL,
    datetime_created            int8    NOT NULL,
    client_id                   text    NOT NULL,
    trigger_datetime_created    int4    NOT NULL,
    feedback                    varchar NULL,
    CONSTRAINT id_pk PRIMARY KEY (id)
);

-- The natural key: the upsert's ON CONFLICT target, which makes a replayed batch add nothing.
-- Fails (and --init-db explains) if existing rows already repeat a key.
CREATE UNIQUE INDEX IF NOT EXISTS subscribers_feedback_natural_key
    ON public.subscribers_feedback (restaurant_id, adv_campaign_id, client_id);

-- The subscriber lookup filters by restaurant; without this it scans the whole table every refresh.
CREATE INDEX IF NOT EXISTS subscribers_restaurants_restaurant_id
    ON public.subscribers_restaurants (restaurant_id);
