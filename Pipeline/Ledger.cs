using Npgsql;

namespace PromoStream;

/// <summary>Where an input event was read: the ledger remembers it, so a replay can tell itself from a duplicate.</summary>
internal readonly record struct InputPosition(string Topic, int Partition, long Offset);

/// <summary>One event the ledger is asked to decide: its campaign, where it came from, and who would be notified.</summary>
internal sealed record LedgerEntry(Campaign Campaign, InputPosition Position, bool Active, string[] Clients);

internal enum Verdict
{
    /// <summary>First sighting: claimed now; the rows in Clients were inserted in this transaction.</summary>
    Notified,
    /// <summary>Held at this very position by a batch whose Kafka transaction never committed: its stored rows again.</summary>
    Replayed,
    /// <summary>Held at another position, or a later copy in the same batch.</summary>
    Duplicate,
    Inactive,
    /// <summary>The database refused this event's rows for a reason no retry cures; it goes to the DLQ.</summary>
    Rejected,
}

/// <summary>
/// A batch ready for the ledger: its entries, the trigger time, and their rows for the staging tables, encoded before
/// the writer connection is free (see <see cref="CopyRows"/>).
/// </summary>
internal sealed record StagedBatch(IReadOnlyList<LedgerEntry> Entries, long Trigger, CopyRows Events);

/// <summary>What the ledger decided for one event. Clients and Trigger are exactly what the Kafka output must carry.</summary>
internal sealed record Decision(Verdict Verdict, long Trigger, IReadOnlyList<string> Clients, string? SqlState = null, string? Reason = null)
{
    public static readonly Decision Duplicate = new(Verdict.Duplicate, 0, []);
    public static readonly Decision Inactive = new(Verdict.Inactive, 0, []);
}

/// <summary>
/// The single record of what was notified (Kafka Streams would call it the task's state store, but it lives in
/// PostgreSQL): one row per campaign the pipeline acted on, written in the same PostgreSQL transaction as that
/// campaign's subscribers_feedback rows. PostgreSQL decides; the Kafka output mirrors the decisions returned here.
/// It also keeps the input position of each Kafka commit, for brokers (or expired groups) that have none.
/// </summary>
internal sealed class CampaignLedger : IDisposable
{
    // Ended campaigns are dropped as expired before the ledger is asked, so their entries are only needed to recognise
    // a replay of a batch that was written just before the end; a week covers any outage worth waiting out.
    internal static readonly TimeSpan RetentionAfterEnd = TimeSpan.FromDays(7);
    private static readonly TimeSpan PruneInterval = TimeSpan.FromMinutes(10);

    private const string FeedbackColumns =
        "restaurant_id, adv_campaign_id, adv_campaign_content, adv_campaign_owner, adv_campaign_owner_contact, " +
        "adv_campaign_datetime_start, adv_campaign_datetime_end, datetime_created, client_id, trigger_datetime_created";

    private readonly NpgsqlDataSource _dataSource;
    private readonly string _where;
    private readonly string _consumerGroup;
    private readonly int _retryBackoffMaxMs;
    // One long-lived connection for writes: the staging tables are session-local, and a pooled connection is reset
    // (temp tables dropped) every time it goes back to the pool.
    private NpgsqlConnection? _writer;
    private DateTime _nextPrune = DateTime.MinValue;

    private long _rowsInserted;

    /// <summary>subscribers_feedback rows this instance inserted (committed), whatever became of the Kafka side.</summary>
    public long RowsInserted => Interlocked.Read(ref _rowsInserted);

    /// <summary>Test hook: runs after a ledger transaction commits, before anything reaches Kafka.</summary>
    internal Action? AfterCommit;

    /// <summary>Where holds and retries are counted (PipelineMetrics.Watch sets it).</summary>
    internal PipelineMetrics? Metrics;

    public CampaignLedger(NpgsqlDataSource dataSource, string where, string consumerGroup, int retryBackoffMaxMs)
    {
        _dataSource = dataSource;
        _where = where;
        _consumerGroup = consumerGroup;
        _retryBackoffMaxMs = retryBackoffMaxMs;
    }

    /// <summary>
    /// Decides every entry in PostgreSQL and writes the rows of the first sightings, together with the input positions
    /// Kafka has committed so far. Transient failures are held and retried until they pass (or stop is requested:
    /// null); events the database refuses for good are found by bisection and come back Rejected; a database that
    /// cannot work at all throws <see cref="DatabaseMisconfiguredException"/>.
    /// </summary>
    public Decision[]? Record(StagedBatch staged, IReadOnlyCollection<InputPosition> committed, CancellationToken stop)
    {
        var decisions = new Decision[staged.Entries.Count];
        return RecordRange(staged, 0, staged.Entries.Count, committed, decisions, stop) ? decisions : null;
    }

    public Decision[]? Record(IReadOnlyList<LedgerEntry> entries, long trigger, IReadOnlyCollection<InputPosition> committed,
        CancellationToken stop) => Record(Stage(entries, trigger), committed, stop);

    /// <summary>Encodes a batch's staging rows; the loop does it while the batch before is still being written.</summary>
    public StagedBatch Stage(IReadOnlyList<LedgerEntry> entries, long trigger) =>
        new(entries, trigger, EventRows(entries, 0, entries.Count, trigger));

    private bool RecordRange(StagedBatch staged, int from, int to,
        IReadOnlyCollection<InputPosition> committed, Decision[] decisions, CancellationToken stop)
    {
        if (from == to && committed.Count == 0) return true;
        var backoff = new Backoff(_retryBackoffMaxMs);
        while (true)
        {
            try
            {
                WriteOnce(staged, from, to, committed, decisions);
                if (backoff.Attempts > 0) Log.Info($"PostgreSQL is reachable again after {backoff.Elapsed.TotalSeconds:0.0}s (at {_where}); resuming");
                Metrics?.Resumed("ledger");
                AfterCommit?.Invoke();
                return true;
            }
            catch (Exception e) when (Failures.Classify(e) == FailureClass.Transient)
            {
                Log.WarnEvery(TimeSpan.FromSeconds(30), "postgres",
                    $"PostgreSQL at {_where} failed (transient: {PostgresDatabase.Describe(e)}); holding the batch, retrying with back-off up to {_retryBackoffMaxMs} ms");
                Metrics?.Retrying(FailureClass.Transient, "ledger");
                if (!backoff.Wait(stop)) return false;
            }
            catch (PostgresException e) when (Failures.Classify(e) == FailureClass.PermanentForEvent)
            {
                // Positions and pruning alone cannot be one event's fault: the database itself is wrong.
                if (to == from) throw new DatabaseMisconfiguredException(Failures.DatabaseAdvice(e, _where), e);
                Metrics?.Retrying(FailureClass.PermanentForEvent, "ledger");
                if (to - from == 1)
                {
                    decisions[from] = new Decision(Verdict.Rejected, 0, [], e.SqlState, $"PostgreSQL refused the event's rows: {e.SqlState}: {e.MessageText}");
                    return committed.Count == 0 || RecordRange(staged, from, from, committed, decisions, stop);
                }
                var middle = from + (to - from) / 2;
                return RecordRange(staged, from, middle, committed, decisions, stop)
                    && RecordRange(staged, middle, to, [], decisions, stop);
            }
            catch (Exception e) when (e is PostgresException or NpgsqlException)
            {
                throw new DatabaseMisconfiguredException(Failures.DatabaseAdvice(e, _where), e);
            }
        }
    }

    private void WriteOnce(StagedBatch staged, int from, int to, IReadOnlyCollection<InputPosition> committed, Decision[] decisions)
    {
        var (entries, trigger) = (staged.Entries, staged.Trigger);
        try
        {
            var connection = _writer ??= OpenWriter();
            using var transaction = connection.BeginTransaction();
            if (to > from)
            {
                // A part of the batch (while bisecting) is encoded again, numbered from its start.
                var whole = from == 0 && to == entries.Count;
                (whole ? staged.Events : EventRows(entries, from, to, trigger)).SendTo(connection, CopyEventsSql);
            }
            // No timeout: a lock another team holds on the table is waited out, and a large batch is not retried forever.
            using var batch = new NpgsqlBatch(connection, transaction) { Timeout = 0 };
            // Positions first: what Kafka has committed tells a replay (not committed yet) from a re-read (committed).
            if (committed.Count > 0) batch.BatchCommands.Add(PositionsCommand(committed));
            if (to > from)
            {
                // Claims first, then what is held: a claim that waited for another instance's commit sees that
                // instance's row in the later statements (READ COMMITTED takes a new snapshot per statement).
                batch.BatchCommands.Add(new NpgsqlBatchCommand(ClaimSql));
                batch.BatchCommands.Add(WithGroup(HeldSql));
            }
            if (DateTime.UtcNow >= _nextPrune) batch.BatchCommands.Add(PruneCommand());
            var outcome = new WriteOutcome();
            using (var reader = batch.ExecuteReader())
                if (to > from) outcome.Read(reader);
            if (outcome.Replays.Count > 0)
            {
                // Only after a failure: the stored rows of the replayed campaigns.
                using var replay = new NpgsqlCommand(ReplayRowsSql, connection, transaction);
                replay.Parameters.Add(new NpgsqlParameter { Value = outcome.Replays.ToArray() });
                using var reader = replay.ExecuteReader();
                outcome.ReadStored(reader);
            }
            if (outcome.SomeClaimedHadRows)
            {
                // Rows written before PromoStream saw the campaign (by the old job, say) are kept, with their feedback.
                using var existing = new NpgsqlCommand(ExistingRowsSql, connection, transaction);
                using var reader = existing.ExecuteReader();
                outcome.ReadExisting(reader);
            }
            if (outcome.ClaimedCount > 0) InsertFeedbackRows(connection, entries, from, outcome, trigger);
            if (outcome.LaterEnds.Count > 0)
            {
                using var extend = new NpgsqlCommand(ExtendEndSql, connection, transaction);
                extend.Parameters.Add(new NpgsqlParameter { Value = outcome.LaterEnds.ToArray() });
                extend.ExecuteNonQuery();
            }
            transaction.Commit();
            _nextPrune = _nextPrune <= DateTime.UtcNow ? DateTime.UtcNow + PruneInterval : _nextPrune;
            for (var n = from; n < to; n++)
            {
                decisions[n] = outcome.Decide(entries[n], n - from, trigger);
                if (decisions[n].Verdict == Verdict.Notified) Interlocked.Add(ref _rowsInserted, decisions[n].Clients.Count);
            }
        }
        catch
        {
            // The connection may be broken; the next attempt starts from a fresh one.
            _writer?.Dispose();
            _writer = null;
            throw;
        }
    }

    /// <summary>The result sets of one write, turned into a decision per event.</summary>
    private sealed class WriteOutcome
    {
        // Claimed in this write, and whether the campaign already had rows then.
        private readonly Dictionary<int, bool> _claimed = [];
        private readonly Dictionary<int, (long Trigger, bool Replay)> _held = [];
        public readonly List<int> LaterEnds = [];
        public readonly List<int> Replays = [];
        private readonly Dictionary<int, List<string>> _stored = [];
        private readonly Dictionary<int, List<string>> _existing = [];
        private readonly Dictionary<int, List<string>> _newClients = [];

        public int ClaimedCount => _claimed.Count;
        public bool SomeClaimedHadRows => _claimed.ContainsValue(true);

        public void Read(NpgsqlDataReader reader)
        {
            while (reader.Read()) _claimed[reader.GetInt32(0)] = reader.GetBoolean(1);
            reader.NextResult();
            while (reader.Read())
            {
                var n = reader.GetInt32(0);
                _held[n] = (reader.GetInt32(1), reader.GetBoolean(2));
                if (reader.GetBoolean(2)) Replays.Add(n);
                if (reader.GetBoolean(3)) LaterEnds.Add(n);
            }
        }

        public void ReadStored(NpgsqlDataReader reader) => ReadClients(reader, _stored);

        public void ReadExisting(NpgsqlDataReader reader) => ReadClients(reader, _existing);

        private static void ReadClients(NpgsqlDataReader reader, Dictionary<int, List<string>> into)
        {
            while (reader.Read())
            {
                var n = reader.GetInt32(0);
                if (!into.TryGetValue(n, out var clients)) into[n] = clients = [];
                clients.Add(reader.GetString(1));
            }
        }

        /// <summary>The claimed events (numbered in the write), in the order of the natural key of their rows.</summary>
        public IEnumerable<int> ClaimedInKeyOrder(IReadOnlyList<LedgerEntry> entries, int from) =>
            _claimed.Keys.OrderBy(n => entries[from + n].Campaign.RestaurantId, StringComparer.Ordinal)
                .ThenBy(n => entries[from + n].Campaign.AdvCampaignId, StringComparer.Ordinal);

        /// <summary>The clients of a claimed event that get a row now: all, but those that had one already.</summary>
        public IReadOnlyList<string> NewClients(LedgerEntry entry, int n)
        {
            if (!_existing.TryGetValue(n, out var existing)) return entry.Clients;
            // Asked twice, for the rows and for the decision: the difference is worked out once.
            if (!_newClients.TryGetValue(n, out var fresh)) _newClients[n] = fresh = entry.Clients.Except(existing, StringComparer.Ordinal).ToList();
            return fresh;
        }

        public Decision Decide(LedgerEntry entry, int n, long trigger)
        {
            if (_claimed.ContainsKey(n)) return new Decision(Verdict.Notified, trigger, NewClients(entry, n));
            if (_held.TryGetValue(n, out var held) && held.Replay)
                return new Decision(Verdict.Replayed, held.Trigger, _stored.GetValueOrDefault(n) ?? []);
            return entry.Active ? Decision.Duplicate : Decision.Inactive;
        }
    }

    // The ledger keys campaigns by their two ids as UUIDs (compact, fast to compare; the contract's duplicates are
    // "the same two ids"); staged_events carries both forms, the text for subscribers_feedback, the UUIDs for the ledger.
    private const string HeldJoin =
        "JOIN public.promostream_ledger l ON l.restaurant_id = e.restaurant_key AND l.adv_campaign_id = e.campaign_key";

    // A campaign held at this event's very position, by this consumer group, in a batch whose Kafka commit is not
    // known to have happened (no recorded position beyond it), is a replay; held in any other way, a duplicate.
    private const string ReplayCondition = """
        l.consumer_group = $1 AND l.input_topic = e.input_topic AND l.input_partition = e.input_partition AND l.input_offset = e.input_offset
        AND NOT EXISTS (SELECT 1 FROM public.promostream_input_positions p
                        WHERE p.consumer_group = $1 AND p.topic = e.input_topic AND p.partition = e.input_partition
                          AND p.next_offset > e.input_offset)
        """;

    // The first active sighting of each campaign not yet held claims it, and its rows go in with it. ON CONFLICT DO
    // NOTHING on the ledger settles a race with another instance (the loser waits for the winner's commit, then finds
    // the campaign held); on subscribers_feedback it keeps a row (and its feedback) that existed before PromoStream saw
    // the campaign. The claimed events are marked by their input position, which the ledger row carries.
    private const string ClaimSql = $$"""
        WITH claimed AS (
            INSERT INTO public.promostream_ledger (restaurant_id, adv_campaign_id, adv_campaign_datetime_end, trigger_datetime_created,
                                                   consumer_group, input_topic, input_partition, input_offset)
            SELECT DISTINCT ON (restaurant_key, campaign_key)
                   restaurant_key, campaign_key, adv_campaign_datetime_end, trigger_datetime_created, consumer_group, input_topic,
                   input_partition, input_offset
            FROM staged_events WHERE active
            ORDER BY restaurant_key, campaign_key, n
            ON CONFLICT (restaurant_id, adv_campaign_id) DO NOTHING
            RETURNING input_partition, input_offset)
        INSERT INTO staged_claimed (n, has_rows)
        SELECT e.n, EXISTS (SELECT 1 FROM public.subscribers_feedback f WHERE f.restaurant_id = e.restaurant_id AND f.adv_campaign_id = e.adv_campaign_id)
        FROM staged_events e JOIN claimed c ON c.input_partition = e.input_partition AND c.input_offset = e.input_offset
        RETURNING n, has_rows
        """;

    // Only when a claimed campaign already had rows: which clients had one.
    private const string ExistingRowsSql = """
        SELECT c.n, f.client_id FROM staged_claimed c JOIN staged_events e ON e.n = c.n
        JOIN public.subscribers_feedback f ON f.restaurant_id = e.restaurant_id AND f.adv_campaign_id = e.adv_campaign_id
        WHERE c.has_rows
        """;

    // Held before this batch (or by an instance whose claim this one waited for): replay or duplicate, and the held
    // end, so that a copy with a later end can keep the campaign in the ledger until then.
    private const string HeldSql = $"""
        SELECT e.n, l.trigger_datetime_created, {ReplayCondition}, l.adv_campaign_datetime_end < e.adv_campaign_datetime_end
        FROM staged_events e {HeldJoin}
        WHERE e.n NOT IN (SELECT n FROM staged_claimed)
        """;

    // A replay re-sends what was stored, not what would be computed now: same clients, same trigger time.
    private const string ReplayRowsSql = $"""
        SELECT e.n, f.client_id
        FROM staged_events e {HeldJoin}
        JOIN public.subscribers_feedback f ON f.restaurant_id = e.restaurant_id AND f.adv_campaign_id = e.adv_campaign_id
             AND f.trigger_datetime_created = l.trigger_datetime_created
        WHERE e.n = ANY($1)
        """;

    // Only for held campaigns seen again with a later end (rare): pruning must wait for the latest end.
    private const string ExtendEndSql = """
        UPDATE public.promostream_ledger l SET adv_campaign_datetime_end = greatest(l.adv_campaign_datetime_end, e.adv_campaign_datetime_end)
        FROM staged_events e
        WHERE e.n = ANY($1) AND l.restaurant_id = e.restaurant_key AND l.adv_campaign_id = e.campaign_key
        """;

    private NpgsqlBatchCommand WithGroup(string sql)
    {
        var command = new NpgsqlBatchCommand(sql);
        command.Parameters.Add(new NpgsqlParameter { Value = _consumerGroup });
        return command;
    }

    private NpgsqlBatchCommand PositionsCommand(IReadOnlyCollection<InputPosition> committed)
    {
        var command = new NpgsqlBatchCommand("""
            INSERT INTO public.promostream_input_positions (consumer_group, topic, partition, next_offset, updated_at)
            SELECT $1, t, p, o, now() FROM unnest($2::text[], $3::int4[], $4::int8[]) AS x(t, p, o)
            ON CONFLICT (consumer_group, topic, partition)
            DO UPDATE SET next_offset = greatest(promostream_input_positions.next_offset, EXCLUDED.next_offset), updated_at = now()
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = _consumerGroup });
        command.Parameters.Add(new NpgsqlParameter { Value = committed.Select(c => c.Topic).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = committed.Select(c => c.Partition).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = committed.Select(c => c.Offset).ToArray() });
        return command;
    }

    private static NpgsqlBatchCommand PruneCommand()
    {
        var command = new NpgsqlBatchCommand("DELETE FROM public.promostream_ledger WHERE adv_campaign_datetime_end < $1");
        command.Parameters.Add(new NpgsqlParameter { Value = DateTimeOffset.UtcNow.Add(-RetentionAfterEnd).ToUnixTimeSeconds() });
        return command;
    }

    /// <summary>Records committed input positions on their own, for a clean stop after the last batch.</summary>
    public void RecordPositions(IReadOnlyCollection<InputPosition> committed, CancellationToken stop) =>
        RecordRange(NoEvents, 0, 0, committed, [], stop);

    private static readonly StagedBatch NoEvents = new([], 0, new CopyRows());

    /// <summary>The recorded next offsets of this group for the given topic, by partition.</summary>
    public Dictionary<int, long> RecordedPositions(string topic)
    {
        using var command = _dataSource.CreateCommand(
            "SELECT partition, next_offset FROM public.promostream_input_positions WHERE consumer_group = $1 AND topic = $2");
        command.Parameters.Add(new NpgsqlParameter { Value = _consumerGroup });
        command.Parameters.Add(new NpgsqlParameter { Value = topic });
        using var reader = command.ExecuteReader();
        var positions = new Dictionary<int, long>();
        while (reader.Read()) positions[reader.GetInt32(0)] = reader.GetInt64(1);
        return positions;
    }

    public long Size()
    {
        using var command = _dataSource.CreateCommand("SELECT count(*) FROM public.promostream_ledger");
        return (long)command.ExecuteScalar()!;
    }

    private NpgsqlConnection OpenWriter()
    {
        var connection = _dataSource.OpenConnection();
        using var create = new NpgsqlCommand("""
            CREATE TEMP TABLE IF NOT EXISTS staged_events (
                n int4, restaurant_key uuid, campaign_key uuid, restaurant_id text, adv_campaign_id text, adv_campaign_datetime_end int8,
                trigger_datetime_created int4, consumer_group text, input_topic text, input_partition int4, input_offset int8, active bool)
                ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS staged_claimed (n int4, has_rows bool) ON COMMIT DELETE ROWS;
            -- The staging tables have no statistics, so the planner takes a batch for millions of rows: JIT would compile
            -- every write (300 ms each, measured) for nothing, and the sorts would spill to disk.
            SET jit = off;
            SET work_mem = '64MB';
            """, connection);
        create.ExecuteNonQuery();
        return connection;
    }

    private const string CopyEventsSql =
        "COPY staged_events (n, restaurant_key, campaign_key, restaurant_id, adv_campaign_id, adv_campaign_datetime_end, trigger_datetime_created, " +
        "consumer_group, input_topic, input_partition, input_offset, active) FROM STDIN (FORMAT BINARY)";

    // A staged row takes about 230 bytes with UUID ids and a short group and topic name.
    private const int StagedRowBytes = 256;

    private CopyRows EventRows(IReadOnlyList<LedgerEntry> entries, int from, int to, long trigger)
    {
        var rows = new CopyRows((to - from) * StagedRowBytes);
        var triggerInt = checked((int)trigger);
        for (var i = from; i < to; i++)
        {
            var (c, position, active, _) = entries[i];
            rows.StartRow(12);
            rows.Int(i - from);
            rows.Uuid(c.Key.RestaurantId);
            rows.Uuid(c.Key.CampaignId);
            rows.Text(c.RestaurantId);
            rows.Text(c.AdvCampaignId);
            rows.Long(c.DatetimeEnd);
            rows.Int(triggerInt);
            rows.Text(_consumerGroup);
            rows.Text(position.Topic);
            rows.Int(position.Partition);
            rows.Long(position.Offset);
            rows.Bool(active);
        }
        return rows;
    }

    // The campaign's eight contract fields, in the contract's order, as subscribers_feedback takes them: the same in
    // each of its subscribers' rows, so encoded once.
    private static CopyRows CampaignFields(Campaign c)
    {
        var fields = CopyRows.Fragment(128 + 3 * (c.Content.Length + c.Owner.Length + c.OwnerContact.Length));
        fields.Text(c.RestaurantId);
        fields.Text(c.AdvCampaignId);
        fields.Text(c.Content);
        fields.Text(c.Owner);
        fields.Text(c.OwnerContact);
        fields.Long(c.DatetimeStart);
        fields.Long(c.DatetimeEnd);
        fields.Long(c.DatetimeCreated);
        return fields;
    }

    private static void FeedbackRows(CopyRows rows, Campaign campaign, IReadOnlyList<string> clients, int trigger)
    {
        var fields = CampaignFields(campaign);
        foreach (var client in clients)
        {
            rows.StartRow(10);
            rows.Encoded(fields.Written);
            rows.Text(client);
            rows.Int(trigger);
        }
    }

    private const string CopyFeedbackSql = $"COPY public.subscribers_feedback ({FeedbackColumns}) FROM STDIN (FORMAT BINARY)";

    // COPY rather than INSERT … SELECT: PostgreSQL writes the rows in bulk (measured: a quarter less time for the
    // same rows), and in the order of the natural key, so that its index is written page by page rather than all over.
    // The claim keeps every other PromoStream writer off these campaigns; a row someone else adds in between fails the
    // COPY on the natural key (transient: the retry finds the campaign has rows, and leaves them).
    private static void InsertFeedbackRows(NpgsqlConnection connection, IReadOnlyList<LedgerEntry> entries, int from, WriteOutcome outcome, long trigger)
    {
        var triggerInt = checked((int)trigger);
        CopyRows.Stream(connection, CopyFeedbackSql, rows =>
        {
            foreach (var n in outcome.ClaimedInKeyOrder(entries, from))
            {
                var entry = entries[from + n];
                FeedbackRows(rows, entry.Campaign, outcome.NewClients(entry, n), triggerInt);
            }
        });
    }

    public void Dispose()
    {
        _writer?.Dispose();
        _writer = null;
    }
}
