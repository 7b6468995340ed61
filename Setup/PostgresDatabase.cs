using Npgsql;
using NpgsqlTypes;

namespace PromoStream;

/// <summary>The schema is missing or incomplete; the user must run --init-db.</summary>
internal sealed class SchemaException(string message) : Exception(message);

/// <summary>PostgreSQL set-up: connections, the schema and its check. The writes are the ledger's (Ledger.cs).</summary>
internal sealed class PostgresDatabase : IDisposable
{
    private readonly NpgsqlDataSource _dataSource;

    public PostgresDatabase(NpgsqlDataSource dataSource) => _dataSource = dataSource;

    public NpgsqlDataSource DataSource => _dataSource;

    /// <param name="adjust">Changes for a connection with other needs (the readiness probe's short timeouts).</param>
    public static NpgsqlDataSource CreateDataSource(string connectionString, Action<NpgsqlConnectionStringBuilder>? adjust = null)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        if (builder.Timeout == 15) builder.Timeout = 5; // a dead database should be noticed quickly; retries are ours
        // Npgsql 10 prefers GSS encryption and, on any failure, connects a second time without it: a wrong password
        // then costs two failed logins, and a silent server can block past the timeout (npgsql#6555, #6655). Kerberos
        // users who want GSS encryption say so in the connection string.
        if (!System.Text.RegularExpressions.Regex.IsMatch(connectionString, @"gss\s*enc", System.Text.RegularExpressions.RegexOptions.IgnoreCase))
            builder.GssEncryptionMode = GssEncryptionMode.Disable;
        adjust?.Invoke(builder);
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
            catch (PostgresException e) when (Failures.Classify(e) == FailureClass.PermanentForProcess)
            {
                // A wrong password or an unknown database does not heal by waiting; trying again only adds failed logins.
                throw new DatabaseMisconfiguredException(Failures.DatabaseAdvice(e, where), e);
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException)
            {
                if (DateTime.UtcNow >= deadline || stop.IsCancellationRequested)
                    throw new ServiceUnreachableException($"cannot reach PostgreSQL at {where} within {wait.TotalSeconds:0}s (postgres.connect_timeout_seconds): {Describe(e)}");
                Log.WarnEvery(TimeSpan.FromSeconds(3), "postgres-wait", $"waiting for PostgreSQL at {where} ({Describe(e)})…");
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
        using var stream = typeof(PostgresDatabase).Assembly.GetManifestResourceStream("schema.sql")
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
                   to_regclass('public.promostream_ledger') IS NOT NULL AND to_regclass('public.promostream_input_positions') IS NOT NULL,
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
        else if (!reader.GetBoolean(3)) missing.Add("the unique index on subscribers_feedback (restaurant_id, adv_campaign_id, client_id)");
        if (!reader.GetBoolean(2)) missing.Add("PromoStream's tables public.promostream_ledger and public.promostream_input_positions");
        if (missing.Count > 0)
            throw new SchemaException($"the database lacks {string.Join(" and ", missing)}; run `dotnet run -- --init-db` first");
    }

    public void Dispose() { }
}

/// <summary>A service PromoStream needs did not answer; the message says which and where, never a password.</summary>
internal sealed class ServiceUnreachableException(string message) : Exception(message);
