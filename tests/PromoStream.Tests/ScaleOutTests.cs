using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>
/// Several instances of one config file on one host, on the faithful broker (which fences a reused transactional id):
/// each derives its own ids, both sinks stay exact while instances come and go.
/// </summary>
[Collection(Stack.Name)]
public sealed class ScaleOutTests(ITestOutputHelper output) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("promostream-scale-");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact]
    public void InstancesOfOneGroupOnOneHostTakeDifferentSlotsAndARestartTakesItsOwnAgain()
    {
        var scope = $"promostream-test-{Guid.NewGuid():N}";
        var kafka = Settings.FromValues(new Dictionary<string, string>
        {
            ["kafka.bootstrap_servers"] = "x:1", ["kafka.input_topic"] = "i", ["kafka.output_topic"] = "o", ["kafka.dlq_topic"] = "d",
            ["kafka.group_id"] = "promo-stream", ["kafka.group_instance_id"] = "{hostname}",
            ["postgres.connection_string"] = "Host=localhost",
        }).Kafka;
        using var first = InstanceSlot.Claim(kafka, scope);
        var second = InstanceSlot.Claim(kafka, scope);
        using var otherGroup = InstanceSlot.Claim(kafka with { GroupId = "other" }, scope);
        var (a, b) = (first.Apply(kafka), second.Apply(kafka));
        Assert.Equal($"promo-stream-{InstanceSlot.Hostname}-0", a.TransactionalId);
        Assert.Equal($"promo-stream-{InstanceSlot.Hostname}-1", b.TransactionalId);
        Assert.Equal(InstanceSlot.Hostname, a.GroupInstanceId);
        Assert.Equal($"{InstanceSlot.Hostname}-1", b.GroupInstanceId);
        Assert.Equal(0, otherGroup.Number);
        using var otherCluster = InstanceSlot.Claim(kafka with { BootstrapServers = "y:1" }, scope);
        Assert.Equal(0, otherCluster.Number); // the same group name on another cluster is another group
        second.Dispose(); // the second instance ends (a kill releases the lock the same way)...
        using var restarted = InstanceSlot.Claim(kafka, scope);
        Assert.Equal(b.TransactionalId, restarted.Apply(kafka).TransactionalId); // ...and its successor takes over its ids
        var configured = kafka with { TransactionalId = "mine" };
        Assert.Equal("mine", restarted.Apply(configured).TransactionalId);
    }

    [RealBrokerFact]
    public async Task TwoProcessesWithOneConfigAndNoTransactionalIdBothGetPartitionsNeitherIsFencedAndBothSinksAreExact()
    {
        var (config, settings, db) = Config("two", groupInstanceId: null);
        var workload = new SimulatorOptions(1200, 120, 0.1, 0.02, 0.05, 0.1, 21, 30, 240, null, null);
        using (var dataSource = PostgresDatabase.CreateDataSource(db)) Simulator.SeedSubscribers(dataSource, workload);
        using var a = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "5"]);
        using var b = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "5"]);
        var publishing = Task.Run(() => Simulator.Publish(settings.Kafka, Simulator.Generate(workload, DateTimeOffset.UtcNow.ToUnixTimeSeconds()),
            workload.Count, workload.Rate, CancellationToken.None));
        Eventually.True(() => Busy(a) && Busy(b), TimeSpan.FromMinutes(1), "both instances holding partitions and committing");
        var report = await publishing;
        // Both waited for, then judged: a rare failure here (seen twice in about 26 runs on kfake: one instance exited
        // non-zero right after "stopping", without its final line) needs both exit codes and both logs to be understood.
        var exits = new[] { a, b }.Select(p => p.WaitForExit(TimeSpan.FromMinutes(2))).ToList();
        Assert.True(exits.All(code => code == 0), $"exit codes {exits[0]} and {exits[1]}\nA:\n{a.Tail(60)}\nB:\n{b.Tail(60)}");

        var ids = new[] { a, b }.Select(TransactionalIdOf).ToList();
        var rows = RowComparison.Of(db, report);
        var sinks = SinkComparison.Of(db, settings.Kafka);
        Figure.Report(output, $"two processes, one config, no transactional_id: ids {string.Join(" and ", ids)}; " +
                              $"fenced lines={Fenced(a) + Fenced(b)}; {rows}; both sinks: {sinks}");
        Assert.NotEqual(ids[0], ids[1]);
        Assert.Equal(0, Fenced(a) + Fenced(b));
        Assert.True(rows.Exact, $"{rows}\nA:\n{a.Tail(25)}\nB:\n{b.Tail(25)}");
        Assert.True(sinks.Identical, $"{sinks}\nA:\n{a.Tail(25)}\nB:\n{b.Tail(25)}");
    }

    [RealBrokerFact]
    public async Task ThreeReplicasWithOneKilledAndRestartedMidStreamKeepBothSinksExact()
    {
        var (config, settings, db) = Config("three", groupInstanceId: "{hostname}");
        var workload = new SimulatorOptions(2400, 150, 0.1, 0.02, 0.05, 0.1, 23, 40, 300, null, null);
        using (var dataSource = PostgresDatabase.CreateDataSource(db)) Simulator.SeedSubscribers(dataSource, workload);
        PromoStreamProcess Replica() => new(["--process", "--config", config, "--stop-when-idle", "5"]);
        using var first = Replica();
        using var second = Replica();
        using var third = Replica();
        var publishing = Task.Run(() => Simulator.Publish(settings.Kafka, Simulator.Generate(workload, DateTimeOffset.UtcNow.ToUnixTimeSeconds()),
            workload.Count, workload.Rate, CancellationToken.None));
        Eventually.True(() => Busy(first) && Busy(second) && Busy(third), TimeSpan.FromMinutes(1), "three replicas holding partitions and committing");
        var killedId = TransactionalIdOf(second);
        second.Signal(Posix.SIGKILL);
        second.WaitForExit(TimeSpan.FromSeconds(10));
        Assert.False(publishing.IsCompleted, "the kill must fall within the stream");
        using var restarted = Replica();
        Eventually.True(() => Busy(restarted), TimeSpan.FromMinutes(1), "the restarted replica holding partitions and committing");
        var report = await publishing;
        foreach (var replica in new[] { first, third, restarted })
            Assert.True(replica.WaitForExit(TimeSpan.FromMinutes(2)) == 0, replica.Tail());

        var rows = RowComparison.Of(db, report);
        var sinks = SinkComparison.Of(db, settings.Kafka);
        var fenced = Fenced(first) + Fenced(third) + Fenced(restarted);
        Figure.Report(output, $"three replicas, one killed and restarted mid-stream: restarted as {TransactionalIdOf(restarted)} (killed: {killedId}); " +
                              $"fenced lines={fenced}; {rows}; both sinks: {sinks}");
        Assert.Equal(killedId, TransactionalIdOf(restarted)); // its slot, so its ids, came back: the zombie's transaction is aborted at once
        Assert.Equal(0, fenced);
        var tails = $"first:\n{first.Tail(20)}\nthird:\n{third.Tail(20)}\nrestarted:\n{restarted.Tail(20)}";
        Assert.True(rows.Exact, $"{rows}\n{tails}");
        Assert.True(sinks.Identical, $"{sinks}\n{tails}");
    }

    private static bool Busy(PromoStreamProcess p)
    {
        if (p.HasExited) throw new InvalidOperationException("an instance exited early:\n" + p.Tail());
        return RealBrokerTests.Holding(p) is { Count: > 0 } && p.Lines.Any(l => l.Contains("first batch committed"));
    }

    private static string TransactionalIdOf(PromoStreamProcess p)
    {
        var line = p.Lines.First(l => l.Contains("transactional id "));
        var start = line.IndexOf("transactional id ", StringComparison.Ordinal) + "transactional id ".Length;
        return line[start..line.IndexOf(')', start)];
    }

    private static int Fenced(PromoStreamProcess p) => p.Lines.Count(l => l.Contains("fenced", StringComparison.OrdinalIgnoreCase));

    /// <summary>One config file for every instance, without a transactional_id: each instance derives its own.</summary>
    private (string Config, Settings Settings, string Database) Config(string name, string? groupInstanceId)
    {
        var bootstrap = Environment.GetEnvironmentVariable("PROMOSTREAM_TEST_BOOTSTRAP")!;
        var db = PostgresServer.NewDatabase();
        var suffix = $"{name}-{Guid.NewGuid():N}"[..20];
        var config = Path.Combine(_dir.FullName, $"{name}.yaml");
        File.WriteAllText(config, $"""
            kafka:
              bootstrap_servers: "{bootstrap}"
              input_topic: "in-{suffix}"
              output_topic: "out-{suffix}"
              dlq_topic: "dlq-{suffix}"
              group_id: "g-{suffix}"
              {(groupInstanceId is null ? "" : $"group_instance_id: \"{groupInstanceId}\"")}
              topic_partitions: 6
              session_timeout_ms: 6000
            postgres:
              connection_string: "{db}"
            processing:
              stats_interval_seconds: 1
            """);
        var settings = Settings.Load(config, new Dictionary<string, string?>());
        Kafka.EnsureTopics(settings.Kafka);
        return (config, settings, db);
    }
}
