using System.Text.RegularExpressions;
using Confluent.Kafka;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>
/// The README's several-terminals section, run as written: `--dev` in one terminal, its export lines pasted into the
/// others, plain `--process` and `--produce` there, from a directory with no config file.
/// </summary>
[Collection(Stack.Name)]
public sealed class DevPlaygroundTests(ITestOutputHelper output) : IDisposable
{
    private readonly DirectoryInfo _elsewhere = Directory.CreateTempSubdirectory("promostream-terminal-");

    public void Dispose() => _elsewhere.Delete(recursive: true);

    /// <summary>Starts `--dev` and reads its `export NAME='VALUE'` lines, as a user pastes them.</summary>
    private static (PromoStreamProcess Dev, Dictionary<string, string> Exports) StartDev()
    {
        var dev = new PromoStreamProcess(["--dev"]);
        dev.WaitForLine(l => l.Contains("Ctrl+C here stops"), TimeSpan.FromMinutes(2), "the playground's instructions");
        var exports = dev.Lines.Select(l => Regex.Match(l.Trim(), "^export (PROMOSTREAM__[A-Z_]+)='(.*)'$")).Where(m => m.Success)
            .ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);
        return (dev, exports);
    }

    /// <summary>Ctrl+C, as the README says: the playground removes its PostgreSQL directory on the way out.</summary>
    private static void Stop(PromoStreamProcess dev)
    {
        if (dev.HasExited) return;
        dev.Signal(Posix.SIGINT);
        Assert.Equal(0, dev.WaitForExit(TimeSpan.FromSeconds(60)));
    }

    private static Settings SettingsFrom(Dictionary<string, string> exports)
    {
        var values = new Dictionary<string, string>();
        Settings.ApplyEnvironment(values, exports.ToDictionary(e => e.Key, e => (string?)e.Value));
        return Settings.FromValues(values);
    }

    [Fact]
    public void TheSeveralTerminalsSectionWorksAsWrittenAndMoreRunsChangeNothing()
    {
        var (dev, exports) = StartDev();
        using (dev)
        try
        {
            Assert.Contains("PROMOSTREAM__KAFKA__BOOTSTRAP_SERVERS", exports.Keys);
            Assert.Contains("PROMOSTREAM__POSTGRES__CONNECTION_STRING", exports.Keys);
            var settings = SettingsFrom(exports);
            var db = settings.Postgres.ConnectionString;
            var expectFile = Path.Combine(_elsewhere.FullName, "expect.txt");

            // Terminal 2 and 3, in a directory without credentials.yaml: the exported variables alone.
            using var processor = new PromoStreamProcess(["--process"], exports, _elsewhere.FullName);
            processor.WaitForLine(l => l.Contains("assigned partitions [") && !l.Contains("[]"), TimeSpan.FromMinutes(1), "the processor's partitions");
            // The README's command, plus --expect-file for the check.
            using (var produce = new PromoStreamProcess(["--produce", "--count", "10000", "--rate", "500", "--expect-file", expectFile], exports, _elsewhere.FullName))
                Assert.True(produce.WaitForExit(TimeSpan.FromMinutes(3)) == 0, produce.Tail());

            var report = new SimulationReport();
            foreach (var line in File.ReadLines(expectFile)) { var p = line.Split(','); report.ExpectedCampaigns.Add((p[0], p[1])); }
            var expected = RowComparison.Of(db, report).Expected;
            Eventually.True(() => PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback") >= expected, TimeSpan.FromMinutes(3), "all rows");
            processor.Signal(Posix.SIGINT); // Ctrl+C in terminal 2
            Assert.Equal(0, processor.WaitForExit(TimeSpan.FromSeconds(30)));

            var first = Sinks(settings, db);
            var rows = RowComparison.Of(db, report);
            for (var run = 0; run < 2; run++)
                using (var again = new PromoStreamProcess(["--process", "--stop-when-idle", "3"], exports, _elsewhere.FullName))
                    Assert.True(again.WaitForExit(TimeSpan.FromMinutes(2)) == 0, again.Tail());
            var after = Sinks(settings, db);
            Figure.Report(output, $"several terminals (--dev, --process, --produce --count 10000): expected={expected} {rows}; " +
                                  $"rows/records/dlq {first}; after two more runs {after}; {dev.Lines.Count(l => l.Contains("WARN"))} warnings from --dev");
            Assert.True(rows.Exact, rows.ToString());
            Assert.Equal(expected, first.Rows);
            Assert.Equal(first.Rows, first.Records);
            Assert.Equal(first, after);
            Assert.True(expected > 40_000, "the README's numbers must give real output");
        }
        finally { Stop(dev); }
    }

    private static (long Rows, int Records, int Dlq) Sinks(Settings s, string db) =>
        (PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback"),
         CommittedRecords.Read(s.Kafka, s.Kafka.OutputTopic, TimeSpan.FromMinutes(1)).Count,
         CommittedRecords.Read(s.Kafka, s.Kafka.DlqTopic, TimeSpan.FromMinutes(1)).Count);

    [Fact]
    public void FillingAPartitionTowardsTheEmbeddedBrokersLimitWarnsBeforeAnythingIsDropped()
    {
        var (dev, exports) = StartDev();
        using (dev)
        try
        {
            var settings = SettingsFrom(exports);
            using var producer = new ProducerBuilder<byte[]?, byte[]>(new ProducerConfig(Kafka.Client(settings.Kafka))).Build();
            var value = new byte[100 * 1024];
            for (var i = 0; i < 44; i++) // 4.4 MB into one partition: past 80% of what the broker keeps, not past all of it
                producer.Produce(new TopicPartition(settings.Kafka.InputTopic, new Partition(0)), new Message<byte[]?, byte[]> { Value = value });
            Assert.Equal(0, producer.Flush(TimeSpan.FromSeconds(30)));
            var warning = dev.WaitForLine(l => l.Contains("WARN") && l.Contains("silently drops"), TimeSpan.FromMinutes(1), "the capacity warning");
            Figure.Report(output, $"embedded broker capacity: {warning[(warning.IndexOf("dev:", StringComparison.Ordinal))..]}");
            Assert.Contains($"{settings.Kafka.InputTopic} partition 0", warning);
        }
        finally { Stop(dev); }
    }

    [Fact]
    public void TheProcessorWarnsTooBeforeItsOutputOutgrowsWhatTheEmbeddedBrokerKeeps()
    {
        var (dev, exports) = StartDev();
        using (dev)
        try
        {
            var settings = SettingsFrom(exports);
            const string restaurant = "9f3e4567-e89b-12d3-a456-426614174000";
            PostgresServer.Execute(settings.Postgres.ConnectionString,
                "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ('9f3e4567-e89b-12d3-a456-426614170001', $1)", restaurant);
            var big = new string('x', 100_000);
            // 45 notifications of ~100 KB for one client: one output partition, past 80% of the broker's 5 MB.
            PipelineTests.Publish(settings, Enumerable.Range(0, 45).Select(i => ((string?)restaurant, Text.Utf8(PipelineTests.SampleEvent
                .Replace(PipelineTests.Restaurant, restaurant).Replace("426614174003", $"{i:D12}").Replace("first campaign", big)))).ToArray());
            using var processor = new PromoStreamProcess(["--process", "--stop-when-idle", "3"], exports, _elsewhere.FullName);
            Assert.True(processor.WaitForExit(TimeSpan.FromMinutes(2)) == 0, processor.Tail());
            var warning = processor.Lines.FirstOrDefault(l => l.Contains("WARN") && l.Contains(settings.Kafka.OutputTopic) && l.Contains("drops older records"));
            Figure.Report(output, $"processor capacity warning: {warning?[(warning.IndexOf("WARN", StringComparison.Ordinal))..] ?? "none"}");
            Assert.NotNull(warning);
        }
        finally { Stop(dev); }
    }
}
