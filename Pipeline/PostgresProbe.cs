using System.Diagnostics;
using Npgsql;

namespace PromoStream;

/// <summary>
/// Asks PostgreSQL `SELECT 1` every 2 seconds on a connection of its own with 2-second timeouts, off the loop thread,
/// so that /readyz turns within seconds of the database going away even when no input arrives; every 5 seconds it
/// also reads the ledger's size. It never logs: the loop's own warnings say what fails, /readyz says it is down.
/// </summary>
internal sealed class PostgresProbe : IDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan LedgerInterval = TimeSpan.FromSeconds(5);
    private const int TimeoutSeconds = 2;

    // A planner estimate for a large table; a small one, or one never analysed, is counted (cheap while small).
    private const string LedgerSizeSql = """
        SELECT CASE WHEN c.reltuples >= 0 AND c.relpages > 0
                    THEN (c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::bigint))::bigint END
        FROM pg_class c WHERE c.oid = 'public.promostream_ledger'::regclass
        """;
    private const long CountBelow = 100_000;

    private readonly NpgsqlDataSource _dataSource;
    private readonly CancellationTokenSource _stop = new();
    private long _lastSuccess;
    private volatile bool _up;
    private volatile string _lastError = "not asked yet";
    private long _downSince;
    private long _ledgerCampaigns;
    private long _ledgerReadAt;

    public PostgresProbe(string connectionString)
    {
        _dataSource = PostgresDatabase.CreateDataSource(connectionString, b =>
        {
            b.Timeout = TimeoutSeconds;
            b.CommandTimeout = TimeoutSeconds;
            b.MaxPoolSize = 1;
        });
        new Thread(Run) { IsBackground = true, Name = "postgres-probe" }.Start();
    }

    /// <summary>The last probe succeeded, and it is recent.</summary>
    public bool Reachable => _up && Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastSuccess)) < 3 * Interval + TimeSpan.FromSeconds(2 * TimeoutSeconds);

    public TimeSpan DownFor => Interlocked.Read(ref _downSince) is var since and > 0 ? Stopwatch.GetElapsedTime(since) : TimeSpan.Zero;

    public string LastError => _lastError;

    public long LedgerCampaigns => Interlocked.Read(ref _ledgerCampaigns);

    private void Run()
    {
        do
        {
            try
            {
                using var connection = _dataSource.OpenConnection();
                using (var ping = new NpgsqlCommand("SELECT 1", connection)) ping.ExecuteScalar();
                Interlocked.Exchange(ref _lastSuccess, Stopwatch.GetTimestamp());
                Interlocked.Exchange(ref _downSince, 0);
                _up = true;
                ReadLedgerSizeNowAndThen(connection);
            }
            catch (Exception e) // a probe must never take the process down, whatever fails
            {
                _up = false;
                _lastError = PostgresDatabase.Describe(e);
                Interlocked.CompareExchange(ref _downSince, Stopwatch.GetTimestamp(), 0);
            }
        } while (!_stop.Token.WaitHandle.WaitOne(Interval));
        _dataSource.Dispose();
    }

    private void ReadLedgerSizeNowAndThen(NpgsqlConnection connection)
    {
        if (_ledgerReadAt != 0 && Stopwatch.GetElapsedTime(_ledgerReadAt) < LedgerInterval) return;
        _ledgerReadAt = Stopwatch.GetTimestamp();
        try
        {
            using var estimate = new NpgsqlCommand(LedgerSizeSql, connection);
            var rows = estimate.ExecuteScalar() is long n && n >= CountBelow ? n : Count(connection);
            Interlocked.Exchange(ref _ledgerCampaigns, rows);
        }
        catch (NpgsqlException) { } // a count past the timeout, say: the last size stands; the next ping tells whether it is down
    }

    private static long Count(NpgsqlConnection connection)
    {
        using var count = new NpgsqlCommand("SELECT count(*) FROM public.promostream_ledger", connection);
        return (long)count.ExecuteScalar()!;
    }

    public void Dispose() => _stop.Cancel();
}
