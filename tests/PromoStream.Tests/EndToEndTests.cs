using System.Text.Json;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>
/// `--process --config FILE --stop-when-idle 5` as a user runs it: against a broker and a database it did not
/// start, with events published by another client.
/// </summary>
[Collection(Stack.Name)]
public sealed class EndToEndTests(ITestOutputHelper output) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("promostream-real-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static readonly byte[][] Malformed =
        [Text.Utf8("{\"restaurant_id\":"), Text.Utf8("not json at all"), Text.Utf8(PipelineTests.SampleEvent.Replace("2659207116", "1"))];

    [Fact]
    public void ContractSampleThroughTheRealExecutableOnTheEmbeddedBroker()
    {
        using var scenario = new Scenario();
        PipelineTests.InsertContractSample(scenario.Database);
        RunContractSample(scenario.Settings, scenario.ConfigFile, scenario.Database, recordsCheckable: true);
    }

    [RealBrokerFact]
    public void ContractSampleThroughTheRealExecutableOnRealKafka()
    {
        var (config, settings, db) = RealBrokerConfig("e2e");
        PipelineTests.InsertContractSample(db);
        RunContractSample(settings, config, db, recordsCheckable: true);
    }

    [RealBrokerFact]
    public async Task SigkillLoopOnRealKafkaLeavesEachExpectedRecordExactlyOnceInTheOutputTopic()
    {
        var (config, settings, db) = RealBrokerConfig("crash");
        var workload = new SimulatorOptions(1500, 50, 0.1, 0.02, 0.05, 0.1, 5, 30, 240, null, null);
        using (var dataSource = PostgresDatabase.CreateDataSource(db)) Simulator.SeedSubscribers(dataSource, workload);
        var publishing = Task.Run(() => Simulator.Publish(settings.Kafka, Simulator.Generate(workload, DateTimeOffset.UtcNow.ToUnixTimeSeconds()),
            workload.Count, workload.Rate, CancellationToken.None));
        var random = new Random(11);
        var slowestAssignment = TimeSpan.Zero;
        for (var kill = 0; kill < 10; kill++)
        {
            // Every third life ends exactly between the PostgreSQL commit and the Kafka commit; the others at a random moment.
            var between = kill % 3 == 1 ? new Dictionary<string, string> { ["PROMOSTREAM_TEST_KILL_AT"] = $"ledger-commit:{random.Next(1, 4)}" } : null;
            using var processor = new PromoStreamProcess(["--process", "--config", config], between);
            var lifetime = System.Diagnostics.Stopwatch.StartNew();
            var until = TimeSpan.FromMilliseconds(random.Next(500, 8000));
            TimeSpan? assignedAfter = null;
            Eventually.True(() =>
            {
                if (assignedAfter is null && processor.Lines.Any(l => l.Contains("assigned partitions ["))) assignedAfter = lifetime.Elapsed;
                return processor.HasExited || lifetime.Elapsed > until;
            }, TimeSpan.FromMinutes(1), "the moment to kill");
            processor.Signal(Posix.SIGKILL);
            processor.WaitForExit(TimeSpan.FromSeconds(10));
            // Static membership: a restarted instance is given its partitions back at once, not after a rebalance timeout.
            if (lifetime.Elapsed > TimeSpan.FromSeconds(5) && !processor.Lines.Any(l => l.Contains("test hook: killed")))
                Assert.True(assignedAfter is { } a && a <= TimeSpan.FromSeconds(5), $"restart {kill}: partitions not back within 5 s\n{processor.Tail()}");
            if (assignedAfter is { } after && after > slowestAssignment) slowestAssignment = after;
        }
        var report = await publishing;
        using (var last = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "5"]))
            Assert.True(last.WaitForExit(TimeSpan.FromMinutes(3)) == 0, last.Tail());
        var rows = RowComparison.Of(db, report);
        var records = CommittedRecords.Read(settings.Kafka, settings.Kafka.OutputTopic, TimeSpan.FromMinutes(1));
        var distinct = records.Select(r => Text.Of(r.Message.Value)).Select(Key).Distinct().Count();
        var sinks = SinkComparison.Of(db, settings.Kafka);
        Figure.Report(output, $"crash on real Kafka: kills=10 {rows}; output records={records.Count} distinct={distinct}; both sinks: {sinks}; " +
                              $"slowest reassignment {slowestAssignment.TotalSeconds:0.0}s");
        Assert.True(rows.Exact, rows.ToString());
        Assert.Equal(rows.Expected, records.Count);
        Assert.Equal(records.Count, distinct);
        Assert.True(sinks.Identical, sinks.ToString()); // same clients and the same trigger time in both sinks
    }

    private static string Key(string json)
    {
        using var d = JsonDocument.Parse(json);
        var r = d.RootElement;
        return $"{r.GetProperty("restaurant_id").GetString()}/{r.GetProperty("adv_campaign_id").GetString()}/{r.GetProperty("client_id").GetString()}";
    }

    private void RunContractSample(Settings settings, string config, string db, bool recordsCheckable)
    {
        PipelineTests.Publish(settings, [(PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent)),
            (PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent)), .. Malformed.Select(m => ((string?)"bad", m))]);
        using var processor = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "5"]);
        var exit = processor.WaitForExit(TimeSpan.FromMinutes(2));
        Assert.True(exit == 0, processor.Tail());

        Assert.Equal(8, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback"));
        Assert.Equal(8, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback WHERE client_id = ANY($1) AND adv_campaign_id = $2",
            (object)PipelineTests.SampleClients, "123e4567-e89b-12d3-a456-426614174003"));
        var records = CommittedRecords.Read(settings.Kafka, settings.Kafka.OutputTopic, TimeSpan.FromSeconds(30));
        var dlq = CommittedRecords.Read(settings.Kafka, settings.Kafka.DlqTopic, TimeSpan.FromSeconds(30));
        Figure.Report(output, $"end to end ({settings.Kafka.BootstrapServers}): exit={exit} rows=8 records={records.Count} dlq={dlq.Count}");
        if (recordsCheckable) Assert.Equal(PipelineTests.SampleClients.Order(), records.Select(r => Text.Of(r.Message.Key)).Order());
        Assert.Equal(Malformed.Length, dlq.Count);
        Assert.All(Malformed, m => Assert.Contains(dlq, r => r.Message.Value.AsSpan().SequenceEqual(m)));
    }

    /// <summary>Fresh topic names on the compose broker, which PromoStream creates itself (create_topics on).</summary>
    private (string Config, Settings Settings, string Database) RealBrokerConfig(string name)
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
              transactional_id: "t-{suffix}"
              group_instance_id: "i-{suffix}"
              topic_partitions: 4
            postgres:
              connection_string: "{db}"
            """);
        var settings = Settings.Load(config, new Dictionary<string, string?>());
        Kafka.EnsureTopics(settings.Kafka);
        return (config, settings, db);
    }
}
