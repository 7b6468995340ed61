using Npgsql;
using NpgsqlTypes;

namespace PromoStream;

/// <summary>The schema is missing or incomplete; the user must run --init-db.</summary>
internal sealed class SchemaException(string message) : Exception(message);

/// <summary>All campaign notifications of one batch for one campaign: the rows and records fan out from here.</summary>
internal sealed record CampaignFanout(Campaign Campaign, string[] Clients, NotificationTemplate Template, long TriggerDatetimeCreated);

/// <summary>PostgreSQL access: schema, and the idempotent batch write into subscribers_feedback.</summary>
internal sealed class FeedbackStore : IDisposable
{
    private const string Columns =
        "restaurant_id, adv_campaign_id, adv_campaign_content, adv_campaign_owner, adv_campaign_owner_contact, " +
        "adv_campaign_datetime_start, adv_campaign_datetime_end, datetime_created, client_id, trigger_datetime_created";

    private readonly NpgsqlDataSource _dataSource;
    // One long-lived connection for writes: the staging table is session-local, and a pooled connection is reset
    // (temp tables dropped) every time it goes back to the pool.
    private NpgsqlConnection? _writer;

    public FeedbackStore(NpgsqlDataSource dataSource) => _dataSource = dataSource;

    public NpgsqlDataSource DataSource => _dataSource;

    public static NpgsqlDataSource CreateDataSource(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        if (builder.Timeout == 15) builder.Timeout = 5; // a dead database should be noticed quickly; retries are ours
        return NpgsqlDataSource.Create(builder.ConnectionString);
    }

    /// <summary>Waits until the database answers, or fails after the bounded wait naming where it looked.</summary>
    public static void WaitUntilReachable(NpgsqlDataSource dataSource, string where, TimeSpan wait, CancellationToken stop)
    {
        var deadline = DateTime.UtcNow + wait;
        while (true)
        {
            try
            {
                using var connection = dataSource.OpenConnection();
                return;
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException)
            {
                if (DateTime.UtcNow >= deadline || stop.IsCancellationRequested)
                    throw new ServiceUnreachableException($"cannot reach PostgreSQL at {where} within {wait.TotalSeconds:0}s: {Describe(e)}");
                Thread.Sleep(500);
            }
        }
    }

    public static string Describe(Exception e) => e switch
    {
        PostgresException pg => $"{pg.SqlState}: {pg.MessageText}",
        NpgsqlException { InnerException: { } inner } n => $"{n.Message} ({inner.Message})",
        _ => e.Message,
    };

    public static string SchemaSql()
    {
        using var stream = typeof(FeedbackStore).Assembly.GetManifestResourceStream("schema.sql")
            ?? throw new InvalidOperationException("schema.sql is not embedded in this build");
        return new StreamReader(stream).ReadToEnd();
    }

    public void ApplySchema()
    {
        try
        {
            using var command = _dataSource.CreateCommand(SchemaSql());
            command.ExecuteNonQuery();
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.UniqueViolation)
        {
            throw new SchemaException(
                "existing rows in public.subscribers_feedback repeat the natural key (restaurant_id, adv_campaign_id, client_id), " +
                $"so its unique index cannot be created: {e.Detail ?? e.MessageText}. Remove the duplicate rows, keeping one per key, then run --init-db again.");
        }
    }

    /// <summary>Refuses to start on a database where the upsert could not work, and says how to fix it.</summary>
    public void CheckSchema()
    {
        using var command = _dataSource.CreateCommand("""
            SELECT to_regclass('public.subscribers_restaurants') IS NOT NULL,
                   to_regclass('public.subscribers_feedback') IS NOT NULL,
                   EXISTS (SELECT 1 FROM pg_index i
                           WHERE i.indrelid = to_regclass('public.subscribers_feedback') AND i.indisunique AND i.indisvalid
                             AND i.indnkeyatts = 3
                             AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
                                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]))
                                 = ARRAY['adv_campaign_id', 'client_id', 'restaurant_id'])
            """);
        using var reader = command.ExecuteReader();
        reader.Read();
        var missing = new List<string>();
        if (!reader.GetBoolean(0)) missing.Add("table public.subscribers_restaurants");
        if (!reader.GetBoolean(1)) missing.Add("table public.subscribers_feedback");
        else if (!reader.GetBoolean(2)) missing.Add("the unique index on subscribers_feedback (restaurant_id, adv_campaign_id, client_id)");
        if (missing.Count > 0)
            throw new SchemaException($"the database lacks {string.Join(" and ", missing)}; run `dotnet run -- --init-db` first");
    }

    /// <summary>
    /// Upserts all rows of a batch in one database transaction. ON CONFLICT DO NOTHING makes a replay add nothing
    /// and leaves a feedback value written by the notification service untouched. Returns the rows actually inserted.
    /// Each campaign's text is staged once and its clients as (campaign, client) pairs; the join fans them out
    /// inside the database, so a campaign with many subscribers is not sent over the wire once per subscriber.
    /// </summary>
    public int Write(IReadOnlyList<CampaignFanout> fanouts)
    {
        if (fanouts.Count == 0) return 0;
        try
        {
            var connection = _writer ??= OpenWriter();
            using var transaction = connection.BeginTransaction();
            StageCampaigns(connection, fanouts);
            StageClients(connection, fanouts);
            using var upsert = new NpgsqlCommand(
                $"INSERT INTO public.subscribers_feedback ({Columns}) " +
                "SELECT c.restaurant_id, c.adv_campaign_id, c.adv_campaign_content, c.adv_campaign_owner, c.adv_campaign_owner_contact, " +
                "c.adv_campaign_datetime_start, c.adv_campaign_datetime_end, c.datetime_created, k.client_id, c.trigger_datetime_created " +
                "FROM staged_clients k JOIN staged_campaigns c ON c.n = k.n " +
                "ON CONFLICT (restaurant_id, adv_campaign_id, client_id) DO NOTHING", connection, transaction);
            var inserted = upsert.ExecuteNonQuery();
            transaction.Commit();
            return inserted;
        }
        catch
        {
            // The connection may be broken; the next attempt starts from a fresh one.
            _writer?.Dispose();
            _writer = null;
            throw;
        }
    }

    private NpgsqlConnection OpenWriter()
    {
        var connection = _dataSource.OpenConnection();
        using var create = new NpgsqlCommand("""
            CREATE TEMP TABLE IF NOT EXISTS staged_campaigns (
                n int4, restaurant_id text, adv_campaign_id text, adv_campaign_content text, adv_campaign_owner text,
                adv_campaign_owner_contact text, adv_campaign_datetime_start int8, adv_campaign_datetime_end int8,
                datetime_created int8, trigger_datetime_created int4) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS staged_clients (n int4, client_id text) ON COMMIT DELETE ROWS;
            """, connection);
        create.ExecuteNonQuery();
        return connection;
    }

    private static void StageCampaigns(NpgsqlConnection connection, IReadOnlyList<CampaignFanout> fanouts)
    {
        using var copy = connection.BeginBinaryImport(
            "COPY staged_campaigns (n, restaurant_id, adv_campaign_id, adv_campaign_content, adv_campaign_owner, adv_campaign_owner_contact, " +
            "adv_campaign_datetime_start, adv_campaign_datetime_end, datetime_created, trigger_datetime_created) FROM STDIN (FORMAT BINARY)");
        for (var n = 0; n < fanouts.Count; n++)
        {
            var c = fanouts[n].Campaign;
            copy.StartRow();
            copy.Write(n, NpgsqlDbType.Integer);
            copy.Write(c.RestaurantId, NpgsqlDbType.Text);
            copy.Write(c.AdvCampaignId, NpgsqlDbType.Text);
            copy.Write(c.Content, NpgsqlDbType.Text);
            copy.Write(c.Owner, NpgsqlDbType.Text);
            copy.Write(c.OwnerContact, NpgsqlDbType.Text);
            copy.Write(c.DatetimeStart, NpgsqlDbType.Bigint);
            copy.Write(c.DatetimeEnd, NpgsqlDbType.Bigint);
            copy.Write(c.DatetimeCreated, NpgsqlDbType.Bigint);
            copy.Write(checked((int)fanouts[n].TriggerDatetimeCreated), NpgsqlDbType.Integer);
        }
        copy.Complete();
    }

    private static void StageClients(NpgsqlConnection connection, IReadOnlyList<CampaignFanout> fanouts)
    {
        using var copy = connection.BeginBinaryImport("COPY staged_clients (n, client_id) FROM STDIN (FORMAT BINARY)");
        for (var n = 0; n < fanouts.Count; n++)
            foreach (var client in fanouts[n].Clients)
            {
                copy.StartRow();
                copy.Write(n, NpgsqlDbType.Integer);
                copy.Write(client, NpgsqlDbType.Text);
            }
        copy.Complete();
    }

    public void Dispose()
    {
        _writer?.Dispose();
        _writer = null;
    }
}

/// <summary>A service PromoStream needs did not answer; the message says which and where, never a password.</summary>
internal sealed class ServiceUnreachableException(string message) : Exception(message);
