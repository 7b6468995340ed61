-- PromoStream schema: the two contract tables (../shared/contract/README.md), the indexes the pipeline needs, and
-- PromoStream's own ledger and input positions.
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

-- PromoStream's own tables. The contract's tables above stay exactly as the contract defines them.

-- The ledger: one row per campaign the pipeline acted on, written in the same transaction as that campaign's
-- subscribers_feedback rows. It alone decides "was this campaign already notified?": a later copy of the campaign
-- (any key, partition, instance, restart or delay) is a duplicate; the same input position read again by the same
-- consumer group, after a Kafka transaction that never committed, is a replay, and gets the stored rows again. Rows
-- are pruned a week after the campaign's (latest seen) end.
CREATE TABLE IF NOT EXISTS public.promostream_ledger (
    restaurant_id               uuid NOT NULL,
    adv_campaign_id             uuid NOT NULL,
    adv_campaign_datetime_end   int8 NOT NULL,
    trigger_datetime_created    int4 NOT NULL,
    consumer_group              text NOT NULL,
    input_topic                 text NOT NULL,
    input_partition             int4 NOT NULL,
    input_offset                int8 NOT NULL,
    CONSTRAINT promostream_ledger_pk PRIMARY KEY (restaurant_id, adv_campaign_id)
);

CREATE INDEX IF NOT EXISTS promostream_ledger_end ON public.promostream_ledger (adv_campaign_datetime_end);

-- The input position each Kafka commit reached, per consumer group: where the group itself has no committed offset
-- (a broker that keeps none for transactions, expired offsets), the processor resumes from here. A DLQ redrive
-- (--redrive-dlq) records its own group's (GROUP-redrive) here, and while a run is unfinished keeps that run's end
-- offsets under the name GROUP-redrive:run-ends.
CREATE TABLE IF NOT EXISTS public.promostream_input_positions (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       int4        NOT NULL,
    next_offset     int8        NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT promostream_input_positions_pk PRIMARY KEY (consumer_group, topic, partition)
);
