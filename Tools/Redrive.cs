using System.Diagnostics;
using System.Text;
using Confluent.Kafka;
using Npgsql;

namespace PromoStream;

/// <summary>
/// `--redrive-dlq`: feeds the dead letters of the DLQ topic back through the pipeline once their cause is fixed (a
/// CHECK constraint dropped, a topic limit raised). It is the processor's own loop, with the DLQ as its input, a
/// consumer group and transactional id of its own, and a <see cref="RedriveSelection"/> choosing what it feeds; it
/// stops at the end offsets the DLQ had when it started. The ledger decides as always: a campaign already notified is
/// a duplicate, and a run killed half-way resumes from its own committed position, up to the same end offsets,
/// without doubling anything. `--dry-run` reads the same records with the same selection and writes nothing anywhere.
/// </summary>
internal static class Redrive
{
    /// <summary>Appended to the configured group id, transactional id and static member id.</summary>
    public const string Suffix = "-redrive";

    public static int Run(CommandLine cli, Settings configured, CancellationToken stop)
    {
        var filter = FilterFrom(cli);
        var dryRun = cli.Has("--dry-run");
        var settings = ForRedrive(configured);
        var k = settings.Kafka;
        var metadata = Kafka.WaitUntilReachable(k, TimeSpan.FromSeconds(k.ConnectTimeoutSeconds));
        var dlq = metadata.Topics.FirstOrDefault(t => t.Topic == k.InputTopic && t.Error.Code == ErrorCode.NoError && t.Partitions.Count > 0);
        if (dlq is null)
        {
            Console.WriteLine($"redrive: the DLQ topic {k.InputTopic} does not exist at {k.BootstrapServers}; nothing to redrive");
            return 0;
        }
        using var dataSource = PostgresDatabase.CreateDataSource(settings.Postgres.ConnectionString);
        PostgresDatabase.WaitUntilReachable(dataSource, settings.Postgres.Describe(), TimeSpan.FromSeconds(settings.Postgres.ConnectTimeoutSeconds), stop);
        new PostgresDatabase(dataSource).CheckSchema();
        var run = new RedriveRun(dataSource, k);
        var (ends, unfinished) = run.Ends(CaptureEnds(k, dlq.Partitions.Select(p => new TopicPartition(k.InputTopic, p.PartitionId))));
        var selection = new RedriveSelection(filter, ends);
        Log.Info($"redrive{(dryRun ? " (dry run)" : "")}: {k.InputTopic} up to the end offsets [{RedriveSelection.DescribeEnds(ends)}] (partition:offset) " +
                 (unfinished ? "of the unfinished run before, which this one completes" : "it has now") + $"; selecting {filter}; consumer group {k.GroupId}");
        Console.WriteLine(dryRun ? DryRun(settings, dataSource, selection, stop) : RedriveOnce(settings, run, selection, stop));
        Console.Write(ByReason(selection));
        return 0;
    }

    /// <summary>The processor's loop on the DLQ, until the selection says the run is over; its summary line.</summary>
    private static string RedriveOnce(Settings settings, RedriveRun run, RedriveSelection selection, CancellationToken stop)
    {
        run.Begin(selection.Ends);
        var stats = Processor.Run(settings, stopWhenIdleSeconds: null, stop, selection);
        if (selection.Completed) run.Finish();
        else Log.Warn("redrive: stopped before the end; run it again to resume from its committed position, up to the same end");
        return $"redrive: redriven={stats.Consumed} notified={stats.Notified} duplicate={stats.Duplicates} " +
               $"dead_lettered_again={stats.Invalid} skipped_by_filter={selection.SkippedByFilter} cut={selection.Cut} " +
               $"replayed={stats.Replayed} inactive={stats.Inactive} no_subscribers={stats.NoSubscribers} " +
               $"notifications={stats.Notifications} complete={Flag(selection.Completed)}";
    }

    private static string DryRun(Settings settings, NpgsqlDataSource dataSource, RedriveSelection selection, CancellationToken stop)
    {
        ReadWithoutWriting(settings, dataSource, selection, stop);
        return $"redrive dry-run: would_redrive={selection.Selected} skipped_by_filter={selection.SkippedByFilter} cut={selection.Cut} " +
               $"complete={Flag(selection.AllRead())} (nothing written: no rows, no records, no committed offsets)";
    }

    /// <summary>
    /// The processor's settings for a redrive: the DLQ as input, and a group, transactional id and static member id
    /// of its own, so that its position and transactions never mix with the stream's. Without a committed position it
    /// starts at the DLQ's beginning, whatever kafka.auto_offset_reset says.
    /// </summary>
    public static Settings ForRedrive(Settings settings)
    {
        var k = settings.Kafka;
        return settings with
        {
            Kafka = k with
            {
                InputTopic = k.DlqTopic,
                GroupId = k.GroupId + Suffix,
                // An empty id is derived at start from the redrive's own group: <group_id>-redrive-<hostname>-<n>.
                TransactionalId = k.TransactionalId.Length > 0 ? k.TransactionalId + Suffix : "",
                GroupInstanceId = k.GroupInstanceId is { } member ? member + Suffix : null,
                AutoOffsetReset = "earliest",
            },
            // The port belongs to the --process instance that may run beside it; a redrive is a job, not a service.
            Metrics = MetricsSettings.Off,
        };
    }

    public static RedriveFilter FilterFrom(CommandLine cli)
    {
        var reason = cli.String("--reason");
        if (reason is { Length: 0 }) throw new UsageException("--reason needs a text to look for in dlq.reason");
        var sqlState = cli.String("--sqlstate")?.ToUpperInvariant();
        if (sqlState is not null && !(sqlState.Length is 2 or 5 && sqlState.All(char.IsAsciiLetterOrDigit)))
            throw new UsageException($"--sqlstate must be a SQLSTATE (5 characters, e.g. 23514) or its class (2, e.g. 23), got '{sqlState}'");
        var since = cli.Time("--since");
        var until = cli.Time("--until");
        if (since >= until) throw new UsageException("--since must be before --until");
        return new RedriveFilter(reason, sqlState, since, until);
    }

    /// <summary>
    /// The last committed offset of each DLQ partition now, as a read_committed reader sees it: the run reads up to
    /// here and no further, so the letters it writes itself (and any written meanwhile) are left for the next run.
    /// </summary>
    private static Dictionary<TopicPartition, long> CaptureEnds(KafkaSettings k, IEnumerable<TopicPartition> partitions)
    {
        using var consumer = new ConsumerBuilder<byte[]?, byte[]?>(Kafka.Consumer(k)).SetLogHandler((_, _) => { }).Build();
        var timeout = TimeSpan.FromSeconds(k.ConnectTimeoutSeconds);
        return partitions.ToDictionary(tp => tp, tp => consumer.QueryWatermarkOffsets(tp, timeout).High.Value);
    }

    /// <summary>
    /// The dry run: the records a redrive would read, from where it would start (the redrive group's committed offset,
    /// else the position recorded in PostgreSQL, else the beginning), judged by the same selection. It joins no group
    /// and commits nothing: offsets are only read.
    /// </summary>
    private static void ReadWithoutWriting(Settings settings, NpgsqlDataSource dataSource, RedriveSelection selection, CancellationToken stop)
    {
        var k = settings.Kafka;
        using var ledger = new CampaignLedger(dataSource, settings.Postgres.Describe(), k.GroupId, settings.Processing.RetryBackoffMaxMs);
        var config = Kafka.Consumer(k);
        config.GroupInstanceId = null;
        config.EnablePartitionEof = true;
        using var consumer = new ConsumerBuilder<byte[]?, byte[]?>(config).SetLogHandler((_, _) => { }).Build();
        var partitions = selection.Ends.Keys.ToList();
        var committed = consumer.Committed(partitions, TimeSpan.FromSeconds(k.ConnectTimeoutSeconds))
            .Where(c => c.Offset.Value >= 0).ToDictionary(c => c.Partition.Value, c => c.Offset.Value);
        var recorded = ledger.RecordedPositions(k.InputTopic);
        var starts = partitions.Select(tp => new TopicPartitionOffset(tp,
            committed.TryGetValue(tp.Partition.Value, out var c) ? c : recorded.TryGetValue(tp.Partition.Value, out var r) ? r : Offset.Beginning)).ToList();
        Log.Info($"redrive (dry run): reading from [{string.Join(",", starts.Select(s => $"{s.Partition.Value}:{(s.Offset == Offset.Beginning ? "beginning" : s.Offset.Value)}"))}]");
        consumer.Assign(starts);
        var progress = Stopwatch.StartNew();
        while (!selection.AllRead() && !stop.IsCancellationRequested)
        {
            try
            {
                var record = consumer.Consume(TimeSpan.FromMilliseconds(200));
                if (record is { IsPartitionEOF: true }) selection.ReachedEnd(record.TopicPartitionOffset);
                else if (record is not null) selection.Judge(record);
            }
            catch (ConsumeException e) when (!e.Error.IsFatal)
            {
                Log.WarnEvery(TimeSpan.FromSeconds(30), "redrive-consume", $"Kafka consume error: {e.Error.Reason}");
            }
            if (progress.Elapsed.TotalSeconds < settings.Processing.StatsIntervalSeconds) continue;
            Log.Info("redrive (dry run)" + selection.Progress());
            progress.Restart();
        }
        consumer.Close();
    }

    /// <summary>The selected letters by their dlq.reason, most frequent first.</summary>
    private static string ByReason(RedriveSelection selection)
    {
        var text = new StringBuilder(selection.SelectedByReason.Count > 0 ? "selected, by dlq.reason:\n" : "");
        foreach (var (reason, count) in selection.SelectedByReason.OrderByDescending(r => r.Value).ThenBy(r => r.Key, StringComparer.Ordinal))
        {
            var oneLine = reason.ReplaceLineEndings(" ");
            text.Append($"  {count,8}  {(oneLine.Length > 160 ? oneLine[..157] + "..." : oneLine)}\n");
        }
        return text.ToString();
    }

    private static string Flag(bool value) => value ? "yes" : "no";
}

/// <summary>
/// The end offsets of a redrive run that has not finished, kept in promostream_input_positions under a name of their
/// own ("GROUP:run-ends", which no consumer group of PromoStream's uses), so that a run stopped or killed half-way is
/// completed up to the same ends. Written before the run's first batch, removed once it is done.
/// </summary>
internal sealed class RedriveRun(NpgsqlDataSource dataSource, KafkaSettings redrive)
{
    private readonly string _key = redrive.GroupId + ":run-ends";

    /// <summary>
    /// The end offsets of this run: those of the unfinished run before it, if there is one (never beyond the DLQ's
    /// ends now, should the topic have been recreated; a partition added since is not that run's); else the DLQ's now.
    /// </summary>
    public (Dictionary<TopicPartition, long> Ends, bool Unfinished) Ends(Dictionary<TopicPartition, long> now)
    {
        var unfinished = UnfinishedEnds();
        if (unfinished.Count == 0) return (now, false);
        return (now.ToDictionary(e => e.Key, e => Math.Min(e.Value, unfinished.GetValueOrDefault(e.Key.Partition.Value, 0))), true);
    }

    private Dictionary<int, long> UnfinishedEnds()
    {
        using var command = dataSource.CreateCommand(
            "SELECT partition, next_offset FROM public.promostream_input_positions WHERE consumer_group = $1 AND topic = $2");
        command.Parameters.Add(new NpgsqlParameter { Value = _key });
        command.Parameters.Add(new NpgsqlParameter { Value = redrive.InputTopic });
        using var reader = command.ExecuteReader();
        var ends = new Dictionary<int, long>();
        while (reader.Read()) ends[reader.GetInt32(0)] = reader.GetInt64(1);
        return ends;
    }

    /// <summary>Before the first batch; again when resuming, which leaves the same ends.</summary>
    public void Begin(IReadOnlyDictionary<TopicPartition, long> ends)
    {
        using var command = dataSource.CreateCommand("""
            INSERT INTO public.promostream_input_positions (consumer_group, topic, partition, next_offset, updated_at)
            SELECT $1, $2, p, o, now() FROM unnest($3::int4[], $4::int8[]) AS x(p, o)
            ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = _key });
        command.Parameters.Add(new NpgsqlParameter { Value = redrive.InputTopic });
        var pairs = ends.ToList();
        command.Parameters.Add(new NpgsqlParameter { Value = pairs.Select(e => e.Key.Partition.Value).ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = pairs.Select(e => e.Value).ToArray() });
        command.ExecuteNonQuery();
    }

    public void Finish()
    {
        using var command = dataSource.CreateCommand("DELETE FROM public.promostream_input_positions WHERE consumer_group = $1 AND topic = $2");
        command.Parameters.Add(new NpgsqlParameter { Value = _key });
        command.Parameters.Add(new NpgsqlParameter { Value = redrive.InputTopic });
        command.ExecuteNonQuery();
    }
}
