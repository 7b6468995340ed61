using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Confluent.Kafka;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>
/// `--redrive-dlq`: campaigns a CHECK constraint refused go to the DLQ; once the constraint is dropped, the redrive
/// feeds them back through the pipeline and they are notified exactly once in both sinks, a dry run changes nothing,
/// a redrive killed half-way and run again still notifies each once, and a later run redrives only what is new.
/// </summary>
[Collection(Stack.Name)]
public sealed class RedriveTests(ITestOutputHelper output) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("promostream-redrive-");

    public void Dispose() => _dir.Delete(recursive: true);

    // ---- the selection, without a broker ----

    [Fact]
    public void TheSelectionFeedsWhatTheFiltersChooseWithoutItsOldDlqHeadersAndPassesOverTheRestAndTheCut()
    {
        var ends = new Dictionary<TopicPartition, long> { [new("dlq", 0)] = 6, [new("dlq", 1)] = 0 };
        var writtenAt = DateTimeOffset.Parse("2025-03-01T12:00:00Z");
        var selection = new RedriveSelection(new RedriveFilter("FORBIDDEN", "23", writtenAt.AddMinutes(-1), writtenAt.AddMinutes(1)), ends);
        var refused = Letter(0, "PostgreSQL refused the event's rows: 23514: violates check constraint \"no_forbidden\"", "23514", writtenAt);
        var fed = selection.Judge(refused);
        var judged = new[]
        {
            Letter(1, "payload is not a JSON object", null, writtenAt),                                      // reason does not match
            Letter(2, "check constraint no_forbidden", "22001", writtenAt),                                 // another SQLSTATE class
            Letter(3, "check constraint no_forbidden", "23514", writtenAt.AddMinutes(5)),                   // written too late
            Letter(4, "check constraint no_forbidden", "23514", writtenAt, cut: true),                      // stored cut
            Letter(5, "check constraint no_forbidden", "23505", writtenAt),                                 // class 23: selected
            Letter(6, "check constraint no_forbidden", "23514", writtenAt),                                 // at the end: the next run's
        }.Select(selection.Judge).ToList();
        // Read again after a failed transaction: judged the same, counted once.
        var again = selection.Judge(Letter(0, "PostgreSQL refused the event's rows: 23514: violates check constraint \"no_forbidden\"", "23514", writtenAt));

        Assert.Equal(Selection.Feed, fed);
        Assert.Equal(new[] { Selection.PassOver, Selection.PassOver, Selection.PassOver, Selection.PassOver, Selection.Feed, Selection.Beyond }, judged);
        Assert.Equal(Selection.Feed, again);
        Assert.Equal((2, 3, 1), (selection.Selected, selection.SkippedByFilter, selection.Cut));
        Assert.Equal(new[] { "origin" }, refused.Message.Headers.Select(h => h.Key)); // the event's own header stays, the dlq.* go
        Assert.Equal(2, selection.SelectedByReason.Values.Sum());
        // Partition 1 is empty: only its end-of-partition event says it is read; partition 0 is read once offset 6 was seen.
        Assert.False(selection.AllRead());
        selection.ReachedEnd(new TopicPartitionOffset("dlq", 1, 0));
        Assert.True(selection.AllRead());
        var committed = new CommittedPositions();
        committed.Add(new Dictionary<TopicPartition, long> { [new("dlq", 0)] = 5 });
        Assert.False(selection.Done(committed)); // offset 5 was read but is not committed yet
        committed.Add(new Dictionary<TopicPartition, long> { [new("dlq", 0)] = 6 });
        Assert.True(selection.Done(committed));
    }

    [Fact]
    public void TheRedriveFlagsAreCheckedAndMistypedOnesGetADidYouMean()
    {
        var cli = CommandLine.Parse(["--redrive-dlq", "--sqlstate", "23514", "--since", "2025-03-01T12:00:00Z", "--until", "1767225600", "--dry-run"]);
        var filter = Redrive.FilterFrom(cli);
        Assert.Equal(Mode.RedriveDlq, cli.Mode);
        Assert.True(cli.Has("--dry-run"));
        Assert.Equal(("23514", DateTimeOffset.Parse("2025-03-01T12:00:00Z"), DateTimeOffset.FromUnixTimeSeconds(1767225600)),
            (filter.SqlState, filter.Since!.Value, filter.Until!.Value));
        (string[] Args, string Says)[] wrong =
        [
            (["--redrive-dlq", "--sqlstate", "235"], "--sqlstate"),
            (["--redrive-dlq", "--since", "yesterday"], "--since"),
            (["--redrive-dlq", "--until", "2025"], "--until"),
            (["--redrive-dlq", "--since", "2026-01-01", "--until", "2025-01-01"], "--since must be before --until"),
            (["--redrive"], "did you mean --redrive-dlq?"),
            (["--redrive-dlq", "--dryrun"], "did you mean --dry-run?"),
            (["--process", "--dry-run"], "--dry-run does not apply to --process"),
        ];
        foreach (var (args, says) in wrong)
        {
            var e = Assert.Throws<UsageException>(() => Redrive.FilterFrom(CommandLine.Parse(args)));
            Assert.Contains(says, e.Message);
        }
    }

    // ---- dry runs and filters on the embedded stack ----

    [Fact]
    public void DryRunsCountByFilterAndChangeNothingThenARedriveNotifiesTheRefusedCampaignsAndARerunNothing()
    {
        var clock = Stopwatch.StartNew();
        using var scenario = new Scenario();
        var db = scenario.Database;
        var k = scenario.Settings.Kafka;
        PipelineTests.InsertContractSample(db);
        PostgresServer.Execute(db, "ALTER TABLE subscribers_feedback ADD CONSTRAINT no_forbidden CHECK (adv_campaign_content <> 'forbidden')");
        PipelineTests.Publish(scenario.Settings, [.. Campaigns(0, 6, "first campaign"), .. Campaigns(6, 4, "forbidden"), .. Malformed(2)]);
        var processor = scenario.Processor(stopWhenIdle: 1);
        Assert.True(processor.WaitForExit(TimeSpan.FromMinutes(2)) == 0, processor.Tail());
        Assert.Equal(6 * 8, Rows(db));
        PostgresServer.Execute(db, "ALTER TABLE subscribers_feedback DROP CONSTRAINT no_forbidden");

        var refused = RunRedrive(scenario.ConfigFile, "--dry-run", "--sqlstate", "23514");
        var byReason = RunRedrive(scenario.ConfigFile, "--dry-run", "--reason", "NOT A JSON");
        var afterDryRuns = Sinks(db, k);
        var redriveGroup = PromoStream.Redrive.ForRedrive(scenario.Settings).Kafka.GroupId;
        Assert.Equal((4L, 2L), (Field(refused, "would_redrive"), Field(refused, "skipped_by_filter")));
        Assert.Equal((2L, 4L), (Field(byReason, "would_redrive"), Field(byReason, "skipped_by_filter")));
        Assert.Contains("23514", refused.Output); // the count by reason names it
        Assert.Equal(new SinkCounts(48, 48, 6, true), afterDryRuns);
        Assert.Equal(0, PostgresServer.Scalar(db, "SELECT count(*) FROM promostream_input_positions WHERE consumer_group LIKE $1", redriveGroup + "%"));
        Assert.All(GroupCommitted(k, redriveGroup), offset => Assert.True(offset < 0, $"dry run committed offset {offset}"));

        var redrive = RunRedrive(scenario.ConfigFile, "--sqlstate", "23514");
        var rowsAfterRedrive = Rows(db);
        var rerun = RunRedrive(scenario.ConfigFile);
        var final = Sinks(db, k);
        Figure.Report(output, $"redrive (embedded): dry runs would_redrive --sqlstate 23514: {Field(refused, "would_redrive")}, " +
                              $"--reason 'NOT A JSON': {Field(byReason, "would_redrive")}, sinks unchanged {afterDryRuns}; {SummaryOf(redrive)}; " +
                              $"rerun {SummaryOf(rerun)}; final {final}; in {clock.Elapsed.TotalSeconds:0.0}s");
        Assert.Equal((4L, 4L, 2L, 0L), (Field(redrive, "redriven"), Field(redrive, "notified"), Field(redrive, "skipped_by_filter"), Field(redrive, "dead_lettered_again")));
        Assert.Equal(10 * 8, rowsAfterRedrive);
        // The malformed letters were passed over by the filtered run: an unfiltered rerun has nothing new to read.
        Assert.Equal((0L, 0L), (Field(rerun, "redriven"), Field(rerun, "skipped_by_filter")));
        Assert.Equal(new SinkCounts(80, 80, 6, true), final);
        Assert.Equal(0, PostgresServer.Scalar(db, "SELECT count(*) FROM promostream_input_positions WHERE consumer_group = $1", redriveGroup + ":run-ends"));
    }

    // ---- exactly once on a faithful broker ----

    [RealBrokerFact]
    public void ARedriveKilledHalfWayAndRunAgainNotifiesEachRefusedCampaignOnceAndDeadLettersTheStillRefusedOnce()
    {
        var clock = Stopwatch.StartNew();
        var (config, settings, db) = RealBrokerConfig("redrive");
        var k = settings.Kafka;
        PipelineTests.InsertContractSample(db);
        PostgresServer.Execute(db, "ALTER TABLE subscribers_feedback ADD CONSTRAINT no_forbidden CHECK (adv_campaign_content <> 'forbidden')");
        PostgresServer.Execute(db, "ALTER TABLE subscribers_feedback ADD CONSTRAINT no_embargoed CHECK (adv_campaign_content <> 'embargoed')");
        var embargoed = Campaigns(26, 2, "embargoed");
        PipelineTests.Publish(settings, [.. Campaigns(0, 20, "first campaign"), .. Campaigns(20, 6, "forbidden"), .. embargoed, .. Malformed(2)]);
        using (var processor = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "1"]))
            Assert.True(processor.WaitForExit(TimeSpan.FromMinutes(2)) == 0, processor.Tail());
        Assert.Equal(20 * 8, Rows(db));
        PostgresServer.Execute(db, "ALTER TABLE subscribers_feedback DROP CONSTRAINT no_forbidden");

        var dryRun = RunRedrive(config, "--dry-run", "--sqlstate", "23514");
        var afterDryRun = Sinks(db, k);
        var redriveGroup = PromoStream.Redrive.ForRedrive(settings).Kafka.GroupId;
        Assert.Equal((8L, 2L, 0L), (Field(dryRun, "would_redrive"), Field(dryRun, "skipped_by_filter"), Field(dryRun, "cut")));
        Assert.Equal(new SinkCounts(160, 160, 10, true), afterDryRun);
        Assert.All(GroupCommitted(k, redriveGroup), offset => Assert.True(offset < 0, $"dry run committed offset {offset}"));

        // Small batches, so that the kill at the second Kafka commit is half-way through the letters.
        using (var killed = new PromoStreamProcess(["--redrive-dlq", "--config", config, "--sqlstate", "23514"], new Dictionary<string, string>
               {
                   ["PROMOSTREAM_TEST_KILL_AT"] = "kafka-commit:2",
                   ["PROMOSTREAM__PROCESSING__BATCH_MAX_EVENTS"] = "3",
               }))
        {
            killed.WaitForExit(TimeSpan.FromMinutes(2));
            Assert.True(killed.Lines.Any(l => l.Contains("test hook: killed at kafka-commit")), killed.Tail());
        }
        var rowsAfterKill = Rows(db);
        var resumed = RunRedrive(config, "--sqlstate", "23514");
        var sinks = SinkComparison.Of(db, k);
        var dlq = CommittedRecords.Read(k, k.DlqTopic, TimeSpan.FromSeconds(30));
        var afterResume = new SinkCounts(sinks.Rows, sinks.Records, dlq.Count, sinks.Identical);
        var again = dlq.Where(l => DeadLetterHeaders.Text(l, "dlq.source.topic") == k.DlqTopic).ToList();
        Figure.Report(output, $"redrive killed at kafka-commit:2 (kfake): dry run would_redrive={Field(dryRun, "would_redrive")} changed nothing ({afterDryRun}); " +
                              $"rows after the kill {rowsAfterKill}; resumed {SummaryOf(resumed)}; then {afterResume}, dead-lettered again={again.Count}");
        Assert.InRange(rowsAfterKill, 160, 26 * 8); // killed before its second Kafka commit: some rows may be written, not sent
        Assert.Equal(new SinkCounts(26 * 8, 26 * 8, 12, true), afterResume);
        Assert.Equal(6 * 8, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback WHERE adv_campaign_content = 'forbidden'"));
        // The two still refused are dead-lettered again once each, whole, with only their new letter's headers.
        Assert.Equal(embargoed.Select(e => Text.Of(e.Value)).Order(), again.Select(l => Text.Of(l.Message.Value)).Order());
        Assert.All(again, l => Assert.Equal(new[] { "23514" }, l.Message.Headers.Where(h => h.Key == "dlq.sqlstate").Select(h => Text.Of(h.GetValueBytes()))));

        // The letters it dead-lettered again lie after its end: the next run reads them, and now they go through.
        PostgresServer.Execute(db, "ALTER TABLE subscribers_feedback DROP CONSTRAINT no_embargoed");
        var next = RunRedrive(config, "--sqlstate", "23514");
        var last = RunRedrive(config);
        var final = Sinks(db, k);
        Figure.Report(output, $"redrive reruns (kfake): next {SummaryOf(next)}; last {SummaryOf(last)}; final {final}; in {clock.Elapsed.TotalSeconds:0.0}s");
        Assert.Equal((2L, 2L, 0L), (Field(next, "redriven"), Field(next, "notified"), Field(next, "dead_lettered_again")));
        Assert.Equal((0L, 0L), (Field(last, "redriven"), Field(last, "notified")));
        Assert.Equal("yes", Regex.Match(SummaryOf(last), @"complete=(\w+)").Groups[1].Value);
        Assert.Equal(new SinkCounts(28 * 8, 28 * 8, 12, true), final);
    }

    // ---- helpers ----

    private static ConsumeResult<byte[]?, byte[]?> Letter(long offset, string reason, string? sqlState, DateTimeOffset writtenAt, bool cut = false)
    {
        var headers = new Headers { { "origin", Text.Utf8("restaurant-app") }, { "dlq.reason", Text.Utf8(reason) } };
        if (sqlState is not null) headers.Add("dlq.sqlstate", Text.Utf8(sqlState));
        headers.Add("dlq.source.topic", Text.Utf8("campaigns"));
        if (cut) { headers.Add("dlq.original.size", Text.Utf8("300009")); headers.Add("dlq.cut.size", Text.Utf8("198468")); }
        return new ConsumeResult<byte[]?, byte[]?>
        {
            TopicPartitionOffset = new TopicPartitionOffset("dlq", 0, offset),
            Message = new Message<byte[]?, byte[]?> { Value = Text.Utf8("{}"), Headers = headers, Timestamp = new Timestamp(writtenAt) },
        };
    }

    /// <summary>Campaigns of the contract's sample restaurant (8 subscribers each), with ids from the index.</summary>
    private static (string? Key, byte[] Value)[] Campaigns(int from, int count, string content) =>
        Enumerable.Range(from, count).Select(i => ((string?)PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent
            .Replace("426614174003", $"42661417{i:D4}").Replace("\"adv_campaign_content\":\"first campaign\"", $"\"adv_campaign_content\":\"{content}\"")))).ToArray();

    private static (string? Key, byte[] Value)[] Malformed(int count) =>
        Enumerable.Range(0, count).Select(i => ((string?)$"bad{i}", Text.Utf8($"[\"not an object {i}\"]"))).ToArray();

    /// <summary>Rows, read_committed output records, whether they are the same notifications, and DLQ records.</summary>
    private sealed record SinkCounts(long Rows, int Records, int Dlq, bool Identical)
    {
        public override string ToString() => $"rows={Rows} records={Records} identical={Identical} dlq={Dlq}";
    }

    private static SinkCounts Sinks(string db, KafkaSettings k)
    {
        var sinks = SinkComparison.Of(db, k);
        return new SinkCounts(sinks.Rows, sinks.Records, CommittedRecords.Read(k, k.DlqTopic, TimeSpan.FromSeconds(30)).Count, sinks.Identical);
    }

    private static long Rows(string db) => PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback");

    /// <summary>Runs `--redrive-dlq` with these flags to its end (exit 0 asserted).</summary>
    private PromoStreamProcess RunRedrive(string config, params string[] flags)
    {
        var clock = Stopwatch.StartNew();
        var process = new PromoStreamProcess(["--redrive-dlq", "--config", config, .. flags]);
        try
        {
            var exit = process.WaitForExit(TimeSpan.FromMinutes(2));
            output.WriteLine($"--redrive-dlq {string.Join(' ', flags)}: exit {exit} after {clock.Elapsed.TotalSeconds:0.0}s: {SummaryOf(process)}\n{process.Output}");
            Assert.True(exit == 0, process.Tail(40));
            return process;
        }
        finally { process.Dispose(); }
    }

    private static string SummaryOf(PromoStreamProcess p) =>
        p.Lines.LastOrDefault(l => l.StartsWith("redrive: redriven=", StringComparison.Ordinal) || l.StartsWith("redrive dry-run:", StringComparison.Ordinal))
        ?? "(no summary line)";

    private static long Field(PromoStreamProcess p, string name) =>
        Regex.Match(SummaryOf(p), $@"\b{name}=(\d+)") is { Success: true } m ? long.Parse(m.Groups[1].Value)
            : throw new InvalidOperationException($"no {name}= in the summary:\n{p.Tail(40)}");

    /// <summary>The group's committed offset of every DLQ partition (negative: none), read without joining it.</summary>
    private static List<long> GroupCommitted(KafkaSettings k, string group)
    {
        using var consumer = new ConsumerBuilder<byte[], byte[]>(new ConsumerConfig(Kafka.Client(k)) { GroupId = group, EnableAutoCommit = false })
            .SetLogHandler((_, _) => { }).Build();
        using var admin = new AdminClientBuilder(Kafka.Client(k)).SetLogHandler((_, _) => { }).Build();
        var partitions = admin.GetMetadata(k.DlqTopic, TimeSpan.FromSeconds(10)).Topics.Single().Partitions
            .Select(p => new TopicPartition(k.DlqTopic, p.PartitionId)).ToList();
        return consumer.Committed(partitions, TimeSpan.FromSeconds(10)).Select(c => c.Offset.Value).ToList();
    }

    /// <summary>Fresh topics, group and ids on the faithful broker; static membership, so a restart is not held up.</summary>
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
