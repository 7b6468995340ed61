using System.Diagnostics;

namespace PromoStream;

/// <summary>
/// Fault injection at exact points, for the crash tests: PROMOSTREAM_TEST_KILL_AT=POINT:N SIGKILLs the process the
/// N-th time it reaches POINT, where POINT is `ledger-commit` (PostgreSQL committed, nothing sent to Kafka yet) or
/// `kafka-commit` (the Kafka transaction holds the batch's output and offsets, not yet committed). Unset in production.
/// </summary>
internal sealed class TestHooks
{
    private readonly string? _point;
    private readonly int _at;
    private int _reached;

    private TestHooks(string? point, int at) => (_point, _at) = (point, at);

    /// <summary>
    /// PROMOSTREAM_TEST_PAUSE_CONSUMING=1: the processor joins the group and owns its partitions but processes nothing
    /// (what it reads is dropped, nothing is committed), so the input waits and its lag can be measured.
    /// </summary>
    public bool PauseConsuming { get; } = Environment.GetEnvironmentVariable("PROMOSTREAM_TEST_PAUSE_CONSUMING") == "1";

    public static TestHooks FromEnvironment()
    {
        var value = Environment.GetEnvironmentVariable("PROMOSTREAM_TEST_KILL_AT");
        if (Environment.GetEnvironmentVariable("PROMOSTREAM_TEST_PAUSE_CONSUMING") == "1") Log.Warn("test hook: this process consumes nothing");
        if (string.IsNullOrEmpty(value)) return new TestHooks(null, 0);
        var parts = value.Split(':');
        if (parts.Length != 2 || parts[0] is not ("ledger-commit" or "kafka-commit") || !int.TryParse(parts[1], out var at) || at < 1)
            throw new ConfigException($"PROMOSTREAM_TEST_KILL_AT must be ledger-commit:N or kafka-commit:N, got '{value}'");
        Log.Warn($"test hook: this process kills itself at {parts[0]} number {at}");
        return new TestHooks(parts[0], at);
    }

    public void Attach(CampaignLedger ledger)
    {
        if (_point == "ledger-commit") ledger.AfterCommit = () => Reach("ledger-commit");
    }

    public void BeforeKafkaCommit() => Reach("kafka-commit");

    private void Reach(string point)
    {
        if (_point != point || Interlocked.Increment(ref _reached) != _at) return;
        Console.Error.WriteLine($"test hook: killed at {point} number {_at}");
        Console.Error.Flush();
        Process.GetCurrentProcess().Kill();
    }
}
