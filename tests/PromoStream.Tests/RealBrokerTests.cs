using System.Diagnostics;
using System.Text.Json;
using Confluent.Kafka;
using Confluent.Kafka.Admin;
using Npgsql;
using Xunit;
using Xunit.Abstractions;

namespace PromoStream.Tests;

/// <summary>
/// "PostgreSQL decides, Kafka mirrors" checked with the real executable against a faithful broker (kfake or the compose
/// Kafka): duplicates across time, partitions and instances; events the database refuses; records too big for their
/// topic; a table lock longer than the Kafka transaction timeout; and a crash between the two commits.
/// </summary>
[Collection(Stack.Name)]
public sealed class RealBrokerTests(ITestOutputHelper output) : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("promostream-realbroker-");

    public void Dispose() => _dir.Delete(recursive: true);

    [RealBrokerFact]
    public void ACampaignSeenAgainAfterTheCacheLifetimeAndOnAnotherInstancesPartitionIsNotifiedOnce()
    {
        var clock = Stopwatch.StartNew();
        var (config, settings, db) = RealBrokerConfig("dup", kafkaYaml: "session_timeout_ms: 6000",
            extraYaml: "processing:\n  subscribers_refresh_seconds: 1\n  stats_interval_seconds: 1");
        PipelineTests.InsertContractSample(db);
        var k = settings.Kafka;
        using var a = new PromoStreamProcess(["--process", "--config", config]);
        using var b = new PromoStreamProcess(["--process", "--config", config], new Dictionary<string, string>
        {
            ["PROMOSTREAM__KAFKA__TRANSACTIONAL_ID"] = k.TransactionalId + "-b",
            ["PROMOSTREAM__KAFKA__GROUP_INSTANCE_ID"] = k.GroupInstanceId + "-b",
        });
        var (ownedByA, ownedByB) = StableAssignment(a, b, partitions: 4);
        var assignmentsBefore = AssignedLines(a) + AssignedLines(b);

        using var committed = new GroupOffsets(settings);
        var first = PublishOne(settings, PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent));
        Eventually.True(() => Rows(db) == 8, TimeSpan.FromSeconds(60), "8 rows after the first copy");
        committed.WaitFor(first.Partition.Value, first.Offset.Value + 1, TimeSpan.FromSeconds(30));
        // The subject here is time passing: the subscriber cache lives 1 s (subscribers_refresh_seconds: 1), and the
        // second copy must arrive after every in-memory state of the first has expired.
        Thread.Sleep(TimeSpan.FromSeconds(2));
        var second = PublishOne(settings, PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent));
        Assert.Equal(first.Partition.Value, second.Partition.Value);
        committed.WaitFor(second.Partition.Value, second.Offset.Value + 1, TimeSpan.FromSeconds(30));

        // Third copy: no key, on a partition the other instance owns.
        var keyedOwner = ownedByA.Contains(first.Partition.Value) ? a : b;
        var other = keyedOwner == a ? b : a;
        var otherPartition = (keyedOwner == a ? ownedByB : ownedByA).Min();
        var third = PublishOne(settings, null, Text.Utf8(PipelineTests.SampleEvent), otherPartition);
        Assert.Equal(otherPartition, third.Partition.Value);
        committed.WaitFor(otherPartition, third.Offset.Value + 1, TimeSpan.FromSeconds(30));
        Assert.Equal(assignmentsBefore, AssignedLines(a) + AssignedLines(b)); // no rebalance moved the partitions meanwhile

        a.Signal(Posix.SIGTERM);
        b.Signal(Posix.SIGTERM);
        Assert.True(a.WaitForExit(TimeSpan.FromSeconds(30)) == 0, a.Tail());
        Assert.True(b.WaitForExit(TimeSpan.FromSeconds(30)) == 0, b.Tail());

        var rows = FeedbackPairs(db);
        var records = CommittedRecords.Read(k, k.OutputTopic, TimeSpan.FromSeconds(30));
        var recordPairs = RecordPairs(records);
        var duplicatesKeyed = FinalCount(keyedOwner, "duplicate");
        var duplicatesOther = FinalCount(other, "duplicate");
        Figure.Report(output, $"duplicates on real Kafka: copies=3 (same key after >cache lifetime, unkeyed on partition {otherPartition} of the other instance) " +
                              $"rows={rows.Count} records={records.Count} duplicate verdicts keyed-owner={duplicatesKeyed} other-instance={duplicatesOther} " +
                              $"partitions A=[{string.Join(",", ownedByA)}] B=[{string.Join(",", ownedByB)}] in {clock.Elapsed.TotalSeconds:0.0}s");
        Assert.Equal(8, rows.Count);
        Assert.Equal(8, records.Count);
        Assert.Equal(rows.Order(), recordPairs.Order());
        Assert.Equal(1, duplicatesKeyed);
        Assert.Equal(1, duplicatesOther);
    }

    [RealBrokerFact]
    public void AnEventTheDatabaseRefusesGoesToTheDlqWithItsSqlStateAndTheOther99AreNotifiedInBothSinks()
    {
        var clock = Stopwatch.StartNew();
        var (config, settings, db) = RealBrokerConfig("check");
        PipelineTests.InsertContractSample(db);
        PostgresServer.Execute(db, "ALTER TABLE subscribers_feedback ADD CONSTRAINT no_forbidden_content CHECK (adv_campaign_content <> 'forbidden')");
        const int forbiddenIndex = 37;
        var events = Enumerable.Range(0, 100).Select(i =>
        {
            var json = PipelineTests.SampleEvent.Replace("426614174003", $"42661417{i:D4}");
            if (i == forbiddenIndex) json = json.Replace("\"adv_campaign_content\":\"first campaign\"", "\"adv_campaign_content\":\"forbidden\"");
            return ((string?)$"42661417{i:D4}", Text.Utf8(json));
        }).ToArray();
        var forbidden = events[forbiddenIndex].Item2;
        Assert.Contains("\"forbidden\"", Text.Of(forbidden));
        PipelineTests.Publish(settings, events);

        using var processor = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "3"]);
        var exit = processor.WaitForExit(TimeSpan.FromMinutes(2));
        Assert.True(exit == 0, processor.Tail());

        var campaigns = PostgresServer.Scalar(db, "SELECT count(DISTINCT adv_campaign_id) FROM subscribers_feedback");
        var rows = FeedbackPairs(db, withCampaign: true);
        var k = settings.Kafka;
        var records = CommittedRecords.Read(k, k.OutputTopic, TimeSpan.FromSeconds(30));
        var dlq = CommittedRecords.Read(k, k.DlqTopic, TimeSpan.FromSeconds(30));
        var sqlState = dlq.Count == 1 && dlq[0].Message.Headers.TryGetLastBytes("dlq.sqlstate", out var s) ? Text.Of(s) : "(none)";
        Figure.Report(output, $"check constraint on real Kafka: events=100 exit={exit} campaigns={campaigns} rows={rows.Count} records={records.Count} " +
                              $"dlq={dlq.Count} sqlstate={sqlState} {FinalLine(processor)} in {clock.Elapsed.TotalSeconds:0.0}s");
        Assert.Equal(99, campaigns);
        Assert.Equal(99 * 8, rows.Count);
        Assert.Equal(0, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback WHERE adv_campaign_id = $1", $"42661417{forbiddenIndex:D4}"));
        var letter = Assert.Single(dlq);
        Assert.Equal(forbidden, letter.Message.Value);
        Assert.Equal("23514", sqlState);
        Assert.Equal(rows.Count, records.Count);
        Assert.Equal(rows.Order(), RecordPairs(records, withCampaign: true).Order());
    }

    [RealBrokerFact]
    public void RecordsTooBigForTheirTopicsGoToTheDlqWholeOrCutAndTheRestIsNotifiedWithoutAnAbortLoop()
    {
        var clock = Stopwatch.StartNew();
        // The output topic must accept less than the DLQ topic, or the event whose notification is too big could not
        // be dead-lettered whole: a notification is its event plus ~100 bytes, a dead letter the event plus headers.
        const int outputLimit = 150_000, dlqLimit = 200_000, inputLimit = 4_194_304 + 65_536;
        var (config, settings, db) = RealBrokerConfig("size", kafkaYaml: "max_message_bytes: 4194304", beforeEnsureTopics: s =>
            CreateTopics(s, (s.Kafka.InputTopic, inputLimit), (s.Kafka.OutputTopic, outputLimit), (s.Kafka.DlqTopic, dlqLimit)));
        PipelineTests.InsertContractSample(db);
        var k = settings.Kafka;

        var content = string.Concat(Enumerable.Range(0, 18_000).Select(i => $"big{i:D6} ")); // 180,000 characters
        var bigEvent = Text.Utf8(PipelineTests.SampleEvent.Replace("426614174003", "426614170100").Replace("first campaign", content));
        var malformed = Text.Utf8("not json " + string.Concat(Enumerable.Range(0, 30_000).Select(i => $"{i:D9} "))); // 300,009 bytes
        var normal = Enumerable.Range(1, 5).Select(i => Text.Utf8(PipelineTests.SampleEvent.Replace("426614174003", $"42661417020{i}"))).ToArray();
        PipelineTests.Publish(settings, [(PipelineTests.Restaurant, bigEvent), ("malformed", malformed), .. normal.Select(n => ((string?)PipelineTests.Restaurant, n))]);

        using var processor = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "3"]);
        var exit = processor.WaitForExit(TimeSpan.FromMinutes(2));
        Assert.True(exit == 0, processor.Tail());

        var rows = FeedbackPairs(db, withCampaign: true);
        var records = CommittedRecords.Read(k, k.OutputTopic, TimeSpan.FromSeconds(30));
        var dlq = CommittedRecords.Read(k, k.DlqTopic, TimeSpan.FromSeconds(30));
        var whole = dlq.SingleOrDefault(r => r.Message.Value.AsSpan().SequenceEqual(bigEvent));
        var cut = dlq.SingleOrDefault(r => Text.Of(r.Message.Key) == "malformed");
        string Header(ConsumeResult<byte[]?, byte[]?>? r, string name) =>
            r is not null && r.Message.Headers.TryGetLastBytes(name, out var v) ? Text.Of(v) : "(none)";
        Figure.Report(output, $"oversize on real Kafka: output max.message.bytes={outputLimit} dlq={dlqLimit}; event of {bigEvent.Length} bytes dead-lettered " +
                              $"{(whole is null ? "NOT whole" : "whole")}, malformed of {malformed.Length} bytes cut to {cut?.Message.Value?.Length.ToString() ?? "(missing)"}; " +
                              $"rows={rows.Count} records={records.Count} dlq={dlq.Count} exit={exit} {FinalLine(processor)} in {clock.Elapsed.TotalSeconds:0.0}s");
        // PostgreSQL decides, Kafka mirrors: the campaign that went to the DLQ has no rows either.
        var bigCampaignRows = PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback WHERE adv_campaign_id = $1", "123e4567-e89b-12d3-a456-426614170100");
        Assert.True(bigCampaignRows == 0, $"the dead-lettered campaign has {bigCampaignRows} rows in PostgreSQL\n{processor.Tail(40)}");
        Assert.Equal(40, rows.Count);
        Assert.Equal(5, PostgresServer.Scalar(db, "SELECT count(DISTINCT adv_campaign_id) FROM subscribers_feedback"));
        Assert.Equal(40, records.Count);
        Assert.Equal(rows.Order(), RecordPairs(records, withCampaign: true).Order());
        Assert.Equal(2, dlq.Count);
        Assert.NotNull(whole);
        Assert.Contains(k.OutputTopic, Header(whole, "dlq.reason"));
        Assert.NotNull(cut);
        var kept = cut!.Message.Value!;
        Assert.Equal(malformed.Length.ToString(), Header(cut, "dlq.original.size"));
        Assert.Equal(kept.Length.ToString(), Header(cut, "dlq.cut.size"));
        Assert.NotEqual("(none)", Header(cut, "dlq.cut.reason"));
        Assert.InRange(kept.Length, 1, malformed.Length - 1);
        Assert.True(malformed.AsSpan(0, kept.Length).SequenceEqual(kept), "the kept bytes are not a prefix of the event");
    }

    [RealBrokerFact]
    public void ATableLockLongerThanTheKafkaTransactionTimeoutDelaysButNeitherFencesNorDuplicates()
    {
        var clock = Stopwatch.StartNew();
        var (config, settings, db) = RealBrokerConfig("lock", kafkaYaml: "transaction_timeout_ms: 10000");
        PipelineTests.InsertContractSample(db);
        var k = settings.Kafka;
        using var processor = new PromoStreamProcess(["--process", "--config", config]);
        processor.WaitForLine(l => l.Contains("assigned partitions ["), TimeSpan.FromSeconds(60), "partitions assigned");

        TimeSpan blockedAfter, rowsAfterRelease;
        DeliveryReport<byte[]?, byte[]> published;
        using (var holder = new NpgsqlConnection(db))
        {
            holder.Open();
            using var transaction = holder.BeginTransaction();
            using (var lockTable = new NpgsqlCommand("LOCK TABLE subscribers_feedback IN ACCESS EXCLUSIVE MODE", holder, transaction))
                lockTable.ExecuteNonQuery();
            var held = Stopwatch.StartNew();
            published = PublishOne(settings, PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent));
            // The processor's ledger write is really queued behind the lock (pg_locks needs no lock on the table).
            Eventually.True(() => PostgresServer.Scalar(db,
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'subscribers_feedback'::regclass") > 0,
                TimeSpan.FromSeconds(30), "the processor waiting for the table lock");
            blockedAfter = held.Elapsed;
            // The subject here is time passing: the lock is held longer than kafka.transaction_timeout_ms (10 s).
            var rest = TimeSpan.FromSeconds(15) - held.Elapsed;
            if (rest > TimeSpan.Zero) Thread.Sleep(rest);
            transaction.Rollback();
        }
        var released = Stopwatch.StartNew();
        Eventually.True(() => Rows(db) == 8, TimeSpan.FromSeconds(60), "8 rows after the lock is released");
        rowsAfterRelease = released.Elapsed;
        // The Kafka side follows the PostgreSQL commit: wait for it before stopping, so the stop is not what sends it.
        using (var committed = new GroupOffsets(settings))
            committed.WaitFor(published.Partition.Value, published.Offset.Value + 1, TimeSpan.FromSeconds(30));

        processor.Signal(Posix.SIGTERM);
        var exit = processor.WaitForExit(TimeSpan.FromSeconds(30));
        var rows = FeedbackPairs(db);
        var records = CommittedRecords.Read(k, k.OutputTopic, TimeSpan.FromSeconds(30));
        var fenced = processor.Lines.Count(l => l.Contains("fenced", StringComparison.OrdinalIgnoreCase));
        Figure.Report(output, $"table lock on real Kafka: held 15s > transaction timeout 10s, processor blocked after {blockedAfter.TotalSeconds:0.0}s, " +
                              $"rows {rowsAfterRelease.TotalSeconds:0.0}s after release; exit={exit} rows={rows.Count} records={records.Count} fenced_lines={fenced} " +
                              $"{FinalLine(processor)} in {clock.Elapsed.TotalSeconds:0.0}s");
        Assert.True(exit == 0, processor.Tail());
        Assert.Equal(0, fenced);
        Assert.Equal(8, rows.Count);
        Assert.Equal(8, records.Count);
        Assert.Equal(rows.Order(), RecordPairs(records).Order());
    }

    [RealBrokerFact]
    public void AKillAfterThePostgresCommitIsResentWithTheStoredRowsAfterARestart() => KillBetweenTheCommits("ledger-commit");

    [RealBrokerFact]
    public void AKillBeforeTheKafkaCommitIsResentWithTheStoredRowsAfterARestart() => KillBetweenTheCommits("kafka-commit");

    private void KillBetweenTheCommits(string point)
    {
        var clock = Stopwatch.StartNew();
        var (config, settings, db) = RealBrokerConfig(point[..5]);
        PipelineTests.InsertContractSample(db);
        var k = settings.Kafka;
        PipelineTests.Publish(settings, (PipelineTests.Restaurant, Text.Utf8(PipelineTests.SampleEvent)));

        int killedExit;
        using (var doomed = new PromoStreamProcess(["--process", "--config", config],
                   new Dictionary<string, string> { ["PROMOSTREAM_TEST_KILL_AT"] = $"{point}:1" }))
        {
            killedExit = doomed.WaitForExit(TimeSpan.FromSeconds(60));
            Assert.True(doomed.Lines.Any(l => l.Contains($"test hook: killed at {point}")), doomed.Tail());
        }
        var rowsBefore = FeedbackPairs(db);
        var recordsBefore = CommittedRecords.Read(k, k.OutputTopic, TimeSpan.FromSeconds(30)).Count;
        Assert.Equal(8, rowsBefore.Count);
        Assert.Equal(0, recordsBefore);
        // The subject here is time passing: trigger times are whole seconds, so after 1.5 s a recomputed one differs.
        Thread.Sleep(TimeSpan.FromMilliseconds(1500));

        using var restarted = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "3"]);
        var exit = restarted.WaitForExit(TimeSpan.FromMinutes(2));
        Assert.True(exit == 0, restarted.Tail());
        var rows = FeedbackPairs(db);
        var records = CommittedRecords.Read(k, k.OutputTopic, TimeSpan.FromSeconds(30));
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Figure.Report(output, $"kill at {point} on real Kafka: killed exit={killedExit} rows before restart={rowsBefore.Count} committed records={recordsBefore}; " +
                              $"after restart exit={exit} rows={rows.Count} records={records.Count} replayed={FinalCount(restarted, "replayed")} " +
                              $"stored trigger {now - rows.First().Trigger}s old; in {clock.Elapsed.TotalSeconds:0.0}s");
        Assert.Equal(rowsBefore.Order(), rows.Order());
        Assert.Equal(8, records.Count);
        Assert.Equal(rows.Order(), RecordPairs(records).Order());
        Assert.Equal(1, FinalCount(restarted, "replayed"));
    }

    // librdkafka puts several records of one partition into one record batch and the broker applies max.message.bytes
    // to the whole batch: records that each fit the topic must not be refused together (TopicLimits.BatchSize).
    [RealBrokerFact]
    public void RecordsThatFitTheirTopicOneByOneButNotTogetherAreDeliveredWithoutAnAbortLoop()
    {
        var clock = Stopwatch.StartNew();
        const int outputLimit = 150_000, dlqLimit = 200_000, inputLimit = 4_194_304 + 65_536;
        var (config, settings, db) = RealBrokerConfig("batch", kafkaYaml: "max_message_bytes: 4194304", beforeEnsureTopics: s =>
            CreateTopics(s, (s.Kafka.InputTopic, inputLimit), (s.Kafka.OutputTopic, outputLimit), (s.Kafka.DlqTopic, dlqLimit)));
        PipelineTests.InsertContractSample(db);
        var k = settings.Kafka;
        // 8 notifications of ~80 KB over 4 partitions: at least two share a partition, ~160 KB > 150,000 together.
        var campaign = Text.Utf8(PipelineTests.SampleEvent.Replace("first campaign", new string('x', 80_000)));
        // Two dead letters of ~120 KB with one key, so one DLQ partition: ~240 KB > 200,000 together.
        byte[][] malformed = [Text.Utf8("not json " + new string('a', 120_000)), Text.Utf8("not json " + new string('b', 120_000))];
        PipelineTests.Publish(settings, (PipelineTests.Restaurant, campaign), ("same", malformed[0]), ("same", malformed[1]));

        using var processor = new PromoStreamProcess(["--process", "--config", config, "--stop-when-idle", "3"]);
        var exit = processor.WaitForExit(TimeSpan.FromSeconds(60));
        var rows = FeedbackPairs(db);
        var records = CommittedRecords.Read(k, k.OutputTopic, TimeSpan.FromSeconds(30));
        var dlq = CommittedRecords.Read(k, k.DlqTopic, TimeSpan.FromSeconds(30));
        Figure.Report(output, $"record batches on real Kafka: output max.message.bytes={outputLimit} dlq={dlqLimit}; exit={exit} rows={rows.Count} " +
                              $"records={records.Count} dlq={dlq.Count} {FinalLine(processor)} in {clock.Elapsed.TotalSeconds:0.0}s");
        Assert.True(exit == 0, processor.Tail());
        Assert.Equal(8, rows.Count);
        Assert.Equal(8, records.Count);
        Assert.Equal(rows.Order(), RecordPairs(records).Order());
        Assert.Equal(2, dlq.Count);
        Assert.All(malformed, m => Assert.Contains(dlq, r => r.Message.Value.AsSpan().SequenceEqual(m)));
    }

    // ---- helpers ----

    /// <summary>Fresh topic names on the broker; extra lines for the kafka section and extra sections allowed.</summary>
    private (string Config, Settings Settings, string Database) RealBrokerConfig(string name, string kafkaYaml = "", string extraYaml = "",
        Action<Settings>? beforeEnsureTopics = null)
    {
        var bootstrap = Environment.GetEnvironmentVariable("PROMOSTREAM_TEST_BOOTSTRAP")!;
        var db = PostgresServer.NewDatabase();
        var suffix = $"{name}-{Guid.NewGuid():N}"[..20];
        var config = Path.Combine(_dir.FullName, $"{name}.yaml");
        var kafkaExtra = string.Concat(kafkaYaml.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => $"  {l.Trim()}\n"));
        File.WriteAllText(config,
            "kafka:\n" +
            $"  bootstrap_servers: \"{bootstrap}\"\n" +
            $"  input_topic: \"in-{suffix}\"\n" +
            $"  output_topic: \"out-{suffix}\"\n" +
            $"  dlq_topic: \"dlq-{suffix}\"\n" +
            $"  group_id: \"g-{suffix}\"\n" +
            $"  transactional_id: \"t-{suffix}\"\n" +
            $"  group_instance_id: \"i-{suffix}\"\n" +
            "  topic_partitions: 4\n" +
            kafkaExtra +
            "postgres:\n" +
            $"  connection_string: \"{db}\"\n" +
            (extraYaml.Length > 0 ? extraYaml.TrimEnd() + "\n" : ""));
        var settings = Settings.Load(config, new Dictionary<string, string?>());
        beforeEnsureTopics?.Invoke(settings);
        Kafka.EnsureTopics(settings.Kafka);
        return (config, settings, db);
    }

    private static void CreateTopics(Settings settings, params (string Name, int MaxMessageBytes)[] topics)
    {
        using var admin = new AdminClientBuilder(Kafka.Client(settings.Kafka)).SetLogHandler((_, _) => { }).Build();
        admin.CreateTopicsAsync(topics.Select(t => new TopicSpecification
        {
            Name = t.Name,
            NumPartitions = 4,
            ReplicationFactor = -1,
            Configs = new Dictionary<string, string> { ["max.message.bytes"] = t.MaxMessageBytes.ToString() },
        }), new CreateTopicsOptions { RequestTimeout = TimeSpan.FromSeconds(10) }).GetAwaiter().GetResult();
    }

    /// <summary>Produces one record (to an explicit partition when given) and returns where it landed.</summary>
    private static DeliveryReport<byte[]?, byte[]> PublishOne(Settings s, string? key, byte[] value, int? partition = null)
    {
        using var producer = new ProducerBuilder<byte[]?, byte[]>(new ProducerConfig(Kafka.Client(s.Kafka))).Build();
        var message = new Message<byte[]?, byte[]> { Key = key is null ? null : Text.Utf8(key), Value = value };
        DeliveryReport<byte[]?, byte[]>? report = null;
        void Delivered(DeliveryReport<byte[]?, byte[]> r) => report = r;
        if (partition is { } p) producer.Produce(new TopicPartition(s.Kafka.InputTopic, new Partition(p)), message, Delivered);
        else producer.Produce(s.Kafka.InputTopic, message, Delivered);
        Assert.Equal(0, producer.Flush(TimeSpan.FromSeconds(10)));
        Assert.NotNull(report);
        Assert.False(report!.Error.IsError, report.Error.Reason);
        return report;
    }

    private static long Rows(string db) => PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback");

    /// <summary>(client_id, trigger_datetime_created[, adv_campaign_id]) of every feedback row.</summary>
    private static List<(string Client, long Trigger, string Campaign)> FeedbackPairs(string db, bool withCampaign = false)
    {
        using var connection = new NpgsqlConnection(db);
        connection.Open();
        using var command = new NpgsqlCommand("SELECT client_id, trigger_datetime_created, adv_campaign_id FROM subscribers_feedback", connection);
        using var reader = command.ExecuteReader();
        var pairs = new List<(string, long, string)>();
        while (reader.Read()) pairs.Add((reader.GetString(0), reader.GetInt32(1), withCampaign ? reader.GetString(2) : ""));
        return pairs;
    }

    private static List<(string Client, long Trigger, string Campaign)> RecordPairs(IEnumerable<ConsumeResult<byte[]?, byte[]?>> records, bool withCampaign = false) =>
        records.Select(r =>
        {
            using var json = JsonDocument.Parse(r.Message.Value);
            var root = json.RootElement;
            return (root.GetProperty("client_id").GetString()!, root.GetProperty("trigger_datetime_created").GetInt64(),
                withCampaign ? root.GetProperty("adv_campaign_id").GetString()! : "");
        }).ToList();

    /// <summary>The partitions an instance holds now, from its last assigned/revoked line; null while it holds none.</summary>
    internal static HashSet<int>? Holding(PromoStreamProcess p)
    {
        var last = p.Lines.LastOrDefault(l => l.Contains("assigned partitions [") || l.Contains("revoked partitions ["));
        if (last is null) return null;
        var start = last.IndexOf("holding [", StringComparison.Ordinal) + "holding [".Length;
        var held = last[start..last.IndexOf(']', start)].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToHashSet();
        return held.Count > 0 ? held : null;
    }

    private static int AssignedLines(PromoStreamProcess p) => p.Lines.Count(l => l.Contains("assigned partitions ["));

    /// <summary>Waits until the two instances hold disjoint, non-empty sets covering every partition.</summary>
    private static (HashSet<int> A, HashSet<int> B) StableAssignment(PromoStreamProcess a, PromoStreamProcess b, int partitions)
    {
        HashSet<int>? ownedA = null, ownedB = null;
        Eventually.True(() =>
        {
            if (a.HasExited || b.HasExited) throw new InvalidOperationException($"an instance exited:\nA:\n{a.Tail()}\nB:\n{b.Tail()}");
            ownedA = Holding(a);
            ownedB = Holding(b);
            return ownedA is { Count: > 0 } && ownedB is { Count: > 0 } && !ownedA.Overlaps(ownedB) && ownedA.Count + ownedB.Count == partitions;
        }, TimeSpan.FromSeconds(90), "both instances holding partitions");
        return (ownedA!, ownedB!);
    }

    private static string FinalLine(PromoStreamProcess p) => p.Lines.LastOrDefault(l => l.StartsWith("final ", StringComparison.Ordinal)) ?? "(no final line)";

    private static long FinalCount(PromoStreamProcess p, string name)
    {
        var field = FinalLine(p).Split(' ').FirstOrDefault(f => f.StartsWith(name + "=", StringComparison.Ordinal));
        return field is null ? -1 : long.Parse(field[(name.Length + 1)..]);
    }

    /// <summary>The consumer group's committed offsets, read without joining the group.</summary>
    private sealed class GroupOffsets(Settings settings) : IDisposable
    {
        private readonly IConsumer<byte[], byte[]> _consumer = new ConsumerBuilder<byte[], byte[]>(
            new ConsumerConfig(Kafka.Client(settings.Kafka)) { GroupId = settings.Kafka.GroupId, EnableAutoCommit = false })
            .SetLogHandler((_, _) => { }).Build();

        public long Of(int partition) =>
            _consumer.Committed([new TopicPartition(settings.Kafka.InputTopic, partition)], TimeSpan.FromSeconds(10)).Single().Offset.Value;

        public void WaitFor(int partition, long next, TimeSpan timeout) =>
            Eventually.True(() => Of(partition) >= next, timeout, $"group offset of partition {partition} at {next}");

        public void Dispose() => _consumer.Dispose();
    }
}
