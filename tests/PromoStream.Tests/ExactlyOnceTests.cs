using System.Diagnostics;
using System.Text.RegularExpressions;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>
/// PostgreSQL decides, Kafka mirrors, on the embedded stack: real processes, the ledger deciding, and both sinks
/// compared record for row. (The embedded broker shows aborted transactions to read_committed readers, so these tests
/// cause no aborts; the real-broker variants are in RealBrokerTests.)
/// </summary>
[Collection(Stack.Name)]
public class ExactlyOnceTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Minutes3 = TimeSpan.FromMinutes(3);

    private static long Final(PromoStreamProcess p, string field) =>
        long.Parse(Regex.Match(p.WaitForLine(l => l.StartsWith("final ", StringComparison.Ordinal), TimeSpan.FromSeconds(30), "final line"),
            $@"\b{field}=(\d+)").Groups[1].Value);

    [Fact]
    public void KilledBetweenThePostgresCommitAndTheKafkaCommitTheRestartSendsTheStoredRows()
    {
        using var scenario = new Scenario();
        PipelineTests.InsertContractSample(scenario.Database);
        var killed = scenario.Processor(environment: new Dictionary<string, string> { ["PROMOSTREAM_TEST_KILL_AT"] = "ledger-commit:1" });
        PipelineTests.Publish(scenario.Settings, (PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent)));
        killed.WaitForExit(Minutes3);
        Assert.Contains("test hook: killed at ledger-commit", killed.Output);
        Assert.Equal(8, PostgresServer.Scalar(scenario.Database, "SELECT count(*) FROM subscribers_feedback"));
        Assert.Empty(CommittedRecords.Read(scenario.Settings.Kafka, scenario.Settings.Kafka.OutputTopic, TimeSpan.FromSeconds(20)));

        // Past the next second, so that a recomputed trigger time would differ from the stored one.
        var stored = PostgresServer.Scalar(scenario.Database, "SELECT max(trigger_datetime_created) FROM subscribers_feedback");
        Eventually.True(() => DateTimeOffset.UtcNow.ToUnixTimeSeconds() > stored, TimeSpan.FromSeconds(5), "the next second");
        var restarted = scenario.Processor(stopWhenIdle: 2);
        Assert.True(restarted.WaitForExit(Minutes3) == 0, restarted.Tail());

        var sinks = SinkComparison.Of(scenario.Database, scenario.Settings.Kafka);
        Figure.Report(output, $"killed between the commits: replayed={Final(restarted, "replayed")} {sinks}");
        Assert.Equal(1, Final(restarted, "replayed"));
        Assert.Equal(8, sinks.Rows);
        Assert.True(sinks.Identical, sinks.ToString());
    }

    [Fact]
    public async Task DrainingAMixedInputThenRestartingThreeTimesChangesNeitherSinkNorTheDlq()
    {
        using var scenario = new Scenario();
        var workload = scenario.Workload(count: 1500, rate: 0);
        scenario.SeedSubscribers(workload);
        var report = await scenario.PublishInBackground(workload);
        var counts = new List<(long Rows, int Records, int Dlq)>();
        for (var run = 0; run < 4; run++)
        {
            var processor = scenario.Processor(stopWhenIdle: 2);
            Assert.True(processor.WaitForExit(Minutes3) == 0, processor.Tail());
            counts.Add((PostgresServer.Scalar(scenario.Database, "SELECT count(*) FROM subscribers_feedback"),
                CommittedRecords.Read(scenario.Settings.Kafka, scenario.Settings.Kafka.OutputTopic, TimeSpan.FromSeconds(30)).Count,
                CommittedRecords.Read(scenario.Settings.Kafka, scenario.Settings.Kafka.DlqTopic, TimeSpan.FromSeconds(30)).Count));
            if (run > 0) Assert.Contains("from the positions recorded in PostgreSQL", processor.Output);
        }
        var rows = RowComparison.Of(scenario.Database, report);
        Figure.Report(output, $"drain then 3 restarts (embedded): rows/records/dlq per run {string.Join(" ", counts)}; malformed sent={report.Malformed}; {rows}");
        Assert.True(rows.Exact, rows.ToString());
        Assert.All(counts, c => Assert.Equal(counts[0], c));
        Assert.Equal(counts[0].Rows, counts[0].Records);
        Assert.Equal(report.Malformed, counts[0].Dlq);
    }

    [Fact]
    public async Task SixtyFourPartitionsWithSixtyThousandWaitingEventsAreAllConsumedBeforeTheIdleStop()
    {
        using var scenario = new Scenario(partitions: 64);
        var workload = scenario.Workload(count: 60_000, rate: 0, restaurants: 400);
        scenario.SeedSubscribers(workload);
        var report = await scenario.PublishInBackground(workload);
        var clock = Stopwatch.StartNew();
        var processor = scenario.Processor(stopWhenIdle: 2);
        var firstCommit = processor.WaitForLine(l => l.Contains("first batch committed"), Minutes3, "the first committed batch");
        var coldStart = double.Parse(Regex.Match(firstCommit, @"committed ([\d.]+)s").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(processor.WaitForExit(Minutes3) == 0, processor.Tail());
        var consumed = Final(processor, "consumed");
        var rows = RowComparison.Of(scenario.Database, report);
        Figure.Report(output, $"64 partitions, {report.Published} waiting: consumed={consumed} exit=0 after {clock.Elapsed.TotalSeconds:0.0}s; " +
                              $"cold start to the first committed batch {coldStart:0.0}s; {rows}");
        Assert.Equal(60_000, consumed);
        Assert.True(rows.Exact, rows.ToString());
        Assert.True(coldStart <= 5, $"cold start {coldStart}s");
    }

    [Fact]
    public void ACampaignWith300000SubscribersGivesExactlyThatManyRowsAndRecordsInBoundedMemory()
    {
        using var scenario = new Scenario(partitions: 64);
        PostgresServer.Execute(scenario.Database,
            "INSERT INTO subscribers_restaurants (client_id, restaurant_id) SELECT gen_random_uuid()::text, $1 FROM generate_series(1, 300000)",
            PipelineTests.Restaurant);
        PipelineTests.Publish(scenario.Settings, (PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent)));
        var processor = scenario.Processor(stopWhenIdle: 3);
        Assert.True(processor.WaitForExit(Minutes3) == 0, processor.Tail());
        var peakRss = Final(processor, "peak_rss_mb");
        var sinks = SinkComparison.Of(scenario.Database, scenario.Settings.Kafka);
        Figure.Report(output, $"300,000 subscribers: {sinks} peak_rss_mb={peakRss}");
        Assert.Equal(300_000, sinks.Rows);
        Assert.True(sinks.Identical, sinks.ToString());
        Assert.True(peakRss <= 300, $"peak RSS {peakRss} MB");
    }
}
