using System.Diagnostics;
using System.Text;
using Confluent.Kafka;
using Npgsql;

namespace PromoStream;

/// <summary>A Kafka error after which this instance must not go on: fenced by a newer instance, or a fatal producer state.</summary>
internal sealed class FatalKafkaException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// The stream processor: consume a batch → validate → drop inactive → dedup → enrich → deliver, where delivery
/// writes the rows to PostgreSQL (idempotent upsert) and, in one Kafka transaction, the notifications, the DLQ
/// records, the dedup changelog and the consumer offsets. The database commit always precedes the Kafka commit,
/// so a crash between them replays the batch: the upsert adds nothing and Kafka gets the output it never committed.
/// </summary>
internal sealed class Processor : IDisposable
{
    private sealed class Batch
    {
        public readonly List<ConsumeResult<byte[]?, byte[]?>> Messages = [];
        public readonly Dictionary<TopicPartition, long> FirstOffsets = [];
        public readonly Dictionary<TopicPartition, long> NextOffsets = [];

        public void Add(ConsumeResult<byte[]?, byte[]?> m)
        {
            Messages.Add(m);
            FirstOffsets.TryAdd(m.TopicPartition, m.Offset.Value);
            NextOffsets[m.TopicPartition] = m.Offset.Value + 1;
        }

        public void DropPartitions(IReadOnlySet<int> partitions)
        {
            Messages.RemoveAll(m => partitions.Contains(m.Partition.Value));
            foreach (var tp in FirstOffsets.Keys.Where(tp => partitions.Contains(tp.Partition.Value)).ToList())
            {
                FirstOffsets.Remove(tp);
                NextOffsets.Remove(tp);
            }
        }
    }

    /// <summary>A batch whose transaction is open, its notifications produced, its rows still being written.</summary>
    private sealed record Pending(Batch Batch, Outcome Outcome, Task<int>? Feedback, Stopwatch Clock);

    private sealed class Outcome
    {
        public readonly List<CampaignFanout> Fanouts = [];
        public readonly List<(ConsumeResult<byte[]?, byte[]?> Message, string Reason)> Invalid = [];
        public readonly List<(CampaignKey Key, int Partition)> FirstSeen = [];
        public readonly List<long> OutputTimestampsMs = [];
        public long SeenAt, Inactive, Duplicates, NoSubscribers, Notifications;
    }

    private readonly Settings _settings;
    private readonly CancellationToken _stop;
    private readonly int? _stopWhenIdleSeconds;
    private readonly bool _transactional;
    private readonly FeedbackStore _store;
    private readonly SubscriberDirectory _subscribers;
    private readonly DedupWindow _dedup;
    private readonly IProducer<byte[], byte[]> _producer;
    private readonly IConsumer<byte[]?, byte[]?> _consumer;
    private readonly ProcessorStats _stats = new();
    // The batch being read: a revocation removes its partitions' messages at once, so that messages read again
    // after a reassignment in the same poll stay in.
    private Batch? _collecting;
    private readonly Backoff _abortBackoff;
    private readonly Action<DeliveryReport<byte[], byte[]>>? _onDelivery;
    private long _deliveryFailures;
    // Runs while this instance holds no partitions: before the first assignment and during a rebalance.
    private readonly Stopwatch _withoutPartitions = Stopwatch.StartNew();
    private Pending? _pending;

    public ProcessorStats Stats => _stats;

    private Processor(Settings settings, int? stopWhenIdleSeconds, CancellationToken stop, FeedbackStore store)
    {
        _settings = settings;
        _stop = stop;
        _stopWhenIdleSeconds = stopWhenIdleSeconds;
        _transactional = settings.Processing.Transactions;
        _store = store;
        _subscribers = new SubscriberDirectory(store.DataSource, TimeSpan.FromSeconds(settings.Processing.SubscribersRefreshSeconds));
        _dedup = new DedupWindow(settings.Processing.DedupWindowSeconds);
        _abortBackoff = new Backoff(settings.Processing.RetryBackoffMaxMs);
        _onDelivery = _transactional ? null : r => { if (r.Error.IsError) Interlocked.Increment(ref _deliveryFailures); };
        _producer = new ProducerBuilder<byte[], byte[]>(Kafka.Producer(settings.Kafka, _transactional))
            .SetLogHandler(OnKafkaLog).SetErrorHandler((_, e) => OnKafkaError("producer", e)).Build();
        _consumer = new ConsumerBuilder<byte[]?, byte[]?>(Kafka.Consumer(settings.Kafka))
            .SetLogHandler(OnKafkaLog).SetErrorHandler((_, e) => OnKafkaError("consumer", e))
            .SetPartitionsAssignedHandler((_, assigned) => OnAssigned(assigned))
            .SetPartitionsRevokedHandler((_, revoked) => OnRevoked(revoked.Select(r => r.TopicPartition)))
            .SetPartitionsLostHandler((_, lost) => OnRevoked(lost.Select(r => r.TopicPartition)))
            .Build();
    }

    /// <summary>Connects, checks, and runs until stopped or idle. Throws for the caller to turn into an exit code.</summary>
    public static ProcessorStats Run(Settings settings, int? stopWhenIdleSeconds, CancellationToken stop)
    {
        using var dataSource = FeedbackStore.CreateDataSource(settings.Postgres.ConnectionString);
        FeedbackStore.WaitUntilReachable(dataSource, settings.Postgres.Describe(),
            TimeSpan.FromSeconds(settings.Postgres.ConnectTimeoutSeconds), stop);
        using var store = new FeedbackStore(dataSource);
        store.CheckSchema();
        Kafka.WaitUntilReachable(settings.Kafka, TimeSpan.FromSeconds(settings.Kafka.ConnectTimeoutSeconds));
        Kafka.EnsureTopics(settings.Kafka, settings.Processing.DedupWindowSeconds);
        using var processor = new Processor(settings, stopWhenIdleSeconds, stop, store);
        processor.Loop();
        return processor._stats;
    }

    private void Loop()
    {
        if (_transactional) InitTransactions();
        _consumer.Subscribe(_settings.Kafka.InputTopic);
        Log.Info($"processing {_settings.Kafka.InputTopic} -> {_settings.Kafka.OutputTopic} (group {_settings.Kafka.GroupId}, " +
                 $"transactional id {(_transactional ? _settings.Kafka.TransactionalId : "none: transactions off")})");
        var lastInput = Stopwatch.StartNew();
        var lastStats = Stopwatch.StartNew();
        while (!_stop.IsCancellationRequested)
        {
            var batch = ConsumeBatch();
            if (batch.Messages.Count > 0)
            {
                ProcessBatch(batch);
                lastInput.Restart(); // after, not before: time spent holding a batch through an outage is not idleness
            }
            else CompletePending(); // no next batch to overlap with: finish this one now
            if (lastStats.Elapsed.TotalSeconds >= _settings.Processing.StatsIntervalSeconds)
            {
                Log.Info(_stats.Line(_dedup.Count));
                lastStats.Restart();
            }
            if (IsIdleLongEnough(lastInput)) { Log.Info($"no input for {_stopWhenIdleSeconds}s; stopping"); break; }
        }
        CompletePending();
        Log.Info(_stats.Line(_dedup.Count));
        _consumer.Close(); // leaves the group now, so the partitions move without waiting for a session timeout
    }

    // The idle clock runs only while partitions are held: a slow group join or a rebalance in progress is not an
    // empty topic. An instance left without partitions for long (more instances than partitions) still stops.
    private bool IsIdleLongEnough(Stopwatch lastInput)
    {
        if (_stopWhenIdleSeconds is not { } idle) return false;
        if (_withoutPartitions.IsRunning && _withoutPartitions.Elapsed.TotalSeconds < Math.Max(idle, 30))
        {
            lastInput.Restart();
            return false;
        }
        return lastInput.Elapsed.TotalSeconds >= idle;
    }

    private void InitTransactions()
    {
        try
        {
            _producer.InitTransactions(TimeSpan.FromSeconds(_settings.Kafka.ConnectTimeoutSeconds));
        }
        catch (KafkaException e)
        {
            throw new ServiceUnreachableException(
                $"cannot initialise Kafka transactions at {_settings.Kafka.BootstrapServers} (transactional id {_settings.Kafka.TransactionalId}): {e.Error.Reason}");
        }
    }

    private Batch ConsumeBatch()
    {
        var batch = _collecting = new Batch();
        try { CollectInto(batch); }
        finally { _collecting = null; }
        return batch;
    }

    /// <summary>
    /// Group commit: a batch closes as soon as nothing more is waiting and the pending batch's rows are written (so
    /// it can commit at once), so a light stream goes through in small batches without delay, and under load a
    /// batch grows while the database is busy; never beyond batch_max_events or batch_max_ms.
    /// </summary>
    private void CollectInto(Batch batch)
    {
        var first = ConsumeOne(TimeSpan.FromMilliseconds(200));
        if (first is null) return;
        batch.Add(first);
        var window = Stopwatch.StartNew();
        var maxWait = TimeSpan.FromMilliseconds(_settings.Processing.BatchMaxMs);
        while (batch.Messages.Count < _settings.Processing.BatchMaxEvents)
        {
            var left = maxWait - window.Elapsed;
            if (left <= TimeSpan.Zero) break;
            var next = ConsumeOne(TimeSpan.Zero);
            if (next is null)
            {
                if (_pending?.Feedback is not { IsCompleted: false }) break;
                next = ConsumeOne(left < PendingPollInterval ? left : PendingPollInterval);
                if (next is null) continue;
            }
            batch.Add(next);
        }
    }

    private static readonly TimeSpan PendingPollInterval = TimeSpan.FromMilliseconds(2);

    private ConsumeResult<byte[]?, byte[]?>? ConsumeOne(TimeSpan timeout)
    {
        try
        {
            var result = _consumer.Consume(timeout);
            return result is { IsPartitionEOF: false } ? result : null;
        }
        catch (ConsumeException e) when (e.Error.IsFatal)
        {
            throw new FatalKafkaException($"fatal Kafka consumer error ({e.Error.Code}): {e.Error.Reason}", e);
        }
        catch (ConsumeException e)
        {
            Log.WarnEvery(TimeSpan.FromSeconds(30), "consume", $"Kafka consume error: {e.Error.Reason}");
            return null;
        }
    }

    /// <summary>
    /// One step of the pipeline, with two batches in it: the new one is evaluated and its PostgreSQL write queued
    /// behind the pending one's, so the database never waits for the loop; then the pending batch is finished
    /// (its rows confirmed, its transaction committed) and the new one's transaction begins.
    /// </summary>
    private void ProcessBatch(Batch batch)
    {
        var clock = Stopwatch.StartNew();
        var outcome = EvaluateWithRetry(batch);
        if (outcome is null)
        {
            Rewind(batch);
            CompletePending(); // after the rewind: if it fails, its own rewind goes back further and must win
            return;
        }
        var feedback = outcome.Fanouts.Count > 0 ? WriteAfter(_pending?.Feedback, outcome) : null;
        if (_pending is { } pending)
        {
            _pending = null;
            if (!Finish(pending, later: feedback))
            {
                // Evaluated after the failed batch, so its dedup decisions may depend on it: replay both.
                WaitQuietly(feedback);
                Forget(outcome);
                Rewind(batch);
                Rewind(pending.Batch); // last, so that a partition in both goes back to the earlier offset
                return;
            }
        }
        _pending = Begin(batch, outcome, feedback, clock);
    }

    /// <summary>Database writes run one at a time on one connection, each as soon as the one before it ends.</summary>
    private Task<int> WriteAfter(Task<int>? previous, Outcome outcome) =>
        previous is null
            ? Task.Run(() => _store.Write(outcome.Fanouts))
            : previous.ContinueWith(_ => _store.Write(outcome.Fanouts), TaskScheduler.Default);

    private static void WaitQuietly(Task? task) => task?.ContinueWith(_ => { }, TaskScheduler.Default).Wait();

    /// <param name="holdThroughOutage">False inside a rebalance: rather than hold the group while the database is
    /// down, the batch is given up and left to the partitions' next owner.</param>
    private void CompletePending(bool holdThroughOutage = true)
    {
        if (_pending is not { } pending) return;
        _pending = null;
        if (!Finish(pending, later: null, holdThroughOutage)) Rewind(pending.Batch);
    }

    /// <summary>
    /// Begins the batch's transaction and produces its notifications and dead letters; its rows are being written
    /// meanwhile. Null when the batch was given up (rewound, to be processed again).
    /// </summary>
    private Pending? Begin(Batch batch, Outcome outcome, Task<int>? feedback, Stopwatch clock)
    {
        try
        {
            OpenTransactionWith(outcome);
            return new Pending(batch, outcome, feedback, clock);
        }
        catch (KafkaException e) when (IsFatal(e))
        {
            WaitQuietly(feedback); // the connection is disposed on the way out: no write may be running on it
            throw new FatalKafkaException(FatalMessage(e), e);
        }
        catch (KafkaException e)
        {
            WaitQuietly(feedback);
            Abort(e);
            Forget(outcome);
            Rewind(batch);
            return null;
        }
    }

    private void OpenTransactionWith(Outcome outcome)
    {
        if (_transactional) _producer.BeginTransaction();
        ProduceNotificationsAndDeadLetters(outcome);
    }

    /// <summary>
    /// Finishes a begun batch: waits for its rows, then puts the dedup changelog and the consumer offsets into its
    /// transaction and commits it. True when committed; false when it was aborted and must be replayed (its dedup
    /// entries are forgotten; the caller rewinds). Each failure class has one place: database errors hold the batch
    /// until the database is back, abortable Kafka errors abort, fatal Kafka errors throw.
    /// </summary>
    /// <param name="later">The next batch's database write, queued behind this one's; it must end before this batch
    /// writes again on the same connection.</param>
    private bool Finish(Pending pending, Task<int>? later, bool holdThroughOutage = true)
    {
        var (batch, outcome, feedback, clock) = pending;
        try
        {
            if (feedback is not null && !AwaitFeedback(feedback))
            {
                WaitQuietly(later);
                AbortQuietly();
                if (!holdThroughOutage || !WriteFeedbackUntilDone(outcome)) { Forget(outcome); return false; }
                OpenTransactionWith(outcome);
            }
            // Only now: a changelog entry must never exist for rows that are not in the database, even in an open
            // transaction, since some brokers (the embedded one) let readers see those.
            ProduceChangelog(outcome);
            Commit(batch);
        }
        catch (KafkaException e) when (IsFatal(e))
        {
            WaitQuietly(later);
            throw new FatalKafkaException(FatalMessage(e), e);
        }
        catch (KafkaException e)
        {
            Abort(e);
            Forget(outcome);
            return false;
        }
        _stats.Committed(batch.Messages.Count, outcome.Invalid.Count, outcome.Inactive, outcome.Duplicates,
            outcome.NoSubscribers, outcome.Notifications, clock.Elapsed, outcome.OutputTimestampsMs,
            DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        _stats.Transaction();
        _abortBackoff.Reset();
        return true;
    }

    private void Commit(Batch batch)
    {
        var timeout = TimeSpan.FromMilliseconds(_settings.Kafka.TransactionTimeoutMs);
        if (_transactional)
        {
            _producer.SendOffsetsToTransaction(Offsets(batch), _consumer.ConsumerGroupMetadata, timeout);
            CommitTransaction(timeout);
            return;
        }
        _producer.Flush(timeout);
        if (Interlocked.Exchange(ref _deliveryFailures, 0) > 0)
            throw new KafkaException(new Error(ErrorCode.Local_Fail, "some records were not delivered"));
        _consumer.Commit(Offsets(batch));
    }

    private void Abort(KafkaException e)
    {
        _stats.Aborted();
        Log.WarnEvery(TimeSpan.FromSeconds(10), "kafka-txn", $"Kafka transaction failed ({e.Error.Code}: {e.Error.Reason}); aborting and replaying the batch");
        AbortQuietly();
        _abortBackoff.Wait(_stop); // grows across consecutive aborts, so a failing record does not spin
    }

    private void CommitTransaction(TimeSpan timeout)
    {
        var backoff = new Backoff(_settings.Processing.RetryBackoffMaxMs);
        while (true)
        {
            try
            {
                _producer.CommitTransaction(timeout);
                return;
            }
            catch (KafkaRetriableException e) when (!_stop.IsCancellationRequested)
            {
                // The commit's outcome is unknown, and retrying it is the documented way to learn it.
                Log.WarnEvery(TimeSpan.FromSeconds(10), "kafka-commit", $"Kafka commit not confirmed ({e.Error.Reason}); retrying");
                backoff.Wait(_stop);
            }
        }
    }

    private void Forget(Outcome outcome)
    {
        foreach (var (key, _) in outcome.FirstSeen) _dedup.Forget(key);
    }

    /// <summary>
    /// Evaluation reads subscribers from PostgreSQL; while the database is down, wait and try again. Null when
    /// stopping, or at once when a batch is pending: that one is finished first (held through the outage with its
    /// transaction aborted, so no transaction stays open for the length of an outage).
    /// </summary>
    private Outcome? EvaluateWithRetry(Batch batch)
    {
        var backoff = new Backoff(_settings.Processing.RetryBackoffMaxMs);
        while (true)
        {
            var outcome = new Outcome();
            try
            {
                Evaluate(batch, outcome);
                if (backoff.Attempts > 0) Log.Info("PostgreSQL is reachable again; resuming");
                return outcome;
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException)
            {
                Forget(outcome);
                WarnDatabase(e, backoff);
                if (_pending is not null || !backoff.Wait(_stop)) return null;
            }
        }
    }

    private void Evaluate(Batch batch, Outcome outcome)
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        outcome.SeenAt = now;
        var active = new List<(Campaign Campaign, ConsumeResult<byte[]?, byte[]?> Message)>();
        var restaurants = new HashSet<string>(StringComparer.Ordinal);
        foreach (var message in batch.Messages)
        {
            if (!CampaignParser.TryParse(message.Message.Value, out var campaign, out var reason))
            {
                outcome.Invalid.Add((message, reason));
                continue;
            }
            if (!campaign!.IsActiveAt(now)) { outcome.Inactive++; continue; }
            active.Add((campaign, message));
            restaurants.Add(campaign.RestaurantId);
        }
        // Before the dedup window is touched: a database error here leaves the window as it was.
        _subscribers.Prepare(restaurants);
        var firstSeen = new List<(Campaign Campaign, long TimestampMs)>();
        foreach (var (campaign, message) in active)
        {
            if (!_dedup.TryAdd(campaign.Key, message.Partition.Value, now)) { outcome.Duplicates++; continue; }
            outcome.FirstSeen.Add((campaign.Key, message.Partition.Value));
            firstSeen.Add((campaign, message.Message.Timestamp.UnixTimestampMs));
        }
        foreach (var (campaign, timestampMs) in firstSeen)
        {
            var clients = _subscribers.ClientsOf(campaign.RestaurantId);
            if (clients.Length == 0) { outcome.NoSubscribers++; continue; }
            outcome.Fanouts.Add(new CampaignFanout(campaign, clients, new NotificationTemplate(campaign, now), now));
            outcome.Notifications += clients.Length;
            outcome.OutputTimestampsMs.Add(timestampMs);
        }
    }

    private bool AwaitFeedback(Task<int> feedback)
    {
        try
        {
            _stats.RowsWritten(feedback.GetAwaiter().GetResult());
            return true;
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException)
        {
            WarnDatabase(e, new Backoff(0));
            return false;
        }
    }

    /// <summary>The database is down: hold the batch and keep Kafka offsets where they are until its rows are written.</summary>
    private bool WriteFeedbackUntilDone(Outcome outcome)
    {
        var backoff = new Backoff(_settings.Processing.RetryBackoffMaxMs);
        while (backoff.Wait(_stop))
        {
            try
            {
                _stats.RowsWritten(_store.Write(outcome.Fanouts));
                Log.Info($"PostgreSQL is reachable again after {backoff.Elapsed.TotalSeconds:0.0}s; resuming");
                return true;
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException)
            {
                WarnDatabase(e, backoff);
            }
        }
        return false;
    }

    private void WarnDatabase(Exception e, Backoff backoff) =>
        Log.WarnEvery(TimeSpan.FromSeconds(30), "postgres",
            $"PostgreSQL at {_settings.Postgres.Describe()} failed: {FeedbackStore.Describe(e)}; " +
            $"retrying with backoff up to {_settings.Processing.RetryBackoffMaxMs} ms, Kafka offsets held");

    private void ProduceNotificationsAndDeadLetters(Outcome outcome)
    {
        var k = _settings.Kafka;
        foreach (var fanout in outcome.Fanouts)
            foreach (var client in fanout.Clients)
                Produce(new TopicPartition(k.OutputTopic, Partition.Any), Encoding.UTF8.GetBytes(client), fanout.Template.For(client), null);
        foreach (var (message, reason) in outcome.Invalid)
            Produce(new TopicPartition(k.DlqTopic, Partition.Any), message.Message.Key!, message.Message.Value!, DeadLetterHeaders(message, reason));
    }

    private void ProduceChangelog(Outcome outcome)
    {
        var k = _settings.Kafka;
        var seenAt = DedupChangelog.EncodeValue(outcome.SeenAt);
        foreach (var (key, partition) in outcome.FirstSeen)
            Produce(new TopicPartition(k.DedupTopic, partition), DedupChangelog.EncodeKey(key), seenAt, null);
    }

    private void Produce(TopicPartition destination, byte[] key, byte[] value, Headers? headers)
    {
        var message = new Message<byte[], byte[]> { Key = key, Value = value, Headers = headers };
        while (true)
        {
            try
            {
                _producer.Produce(destination, message, _onDelivery);
                return;
            }
            catch (ProduceException<byte[], byte[]> e) when (e.Error.Code == ErrorCode.Local_QueueFull && !_stop.IsCancellationRequested)
            {
                _producer.Poll(TimeSpan.FromMilliseconds(20)); // the local queue drains as the broker acknowledges
            }
        }
    }

    /// <summary>The original bytes and key, the original headers, and why it was rejected and where it came from.</summary>
    private static Headers DeadLetterHeaders(ConsumeResult<byte[]?, byte[]?> message, string reason)
    {
        var headers = new Headers();
        if (message.Message.Headers is { } original)
            foreach (var h in original) headers.Add(h.Key, h.GetValueBytes());
        headers.Add("dlq.reason", Encoding.UTF8.GetBytes(reason));
        headers.Add("dlq.source.topic", Encoding.UTF8.GetBytes(message.Topic));
        headers.Add("dlq.source.partition", Encoding.ASCII.GetBytes(message.Partition.Value.ToString()));
        headers.Add("dlq.source.offset", Encoding.ASCII.GetBytes(message.Offset.Value.ToString()));
        return headers;
    }

    private static List<TopicPartitionOffset> Offsets(Batch batch) =>
        batch.NextOffsets.Select(o => new TopicPartitionOffset(o.Key, o.Value)).ToList();

    private void AbortQuietly()
    {
        if (!_transactional) return;
        try { _producer.AbortTransaction(TimeSpan.FromSeconds(30)); }
        catch (KafkaException e) when (IsFatal(e)) { throw new FatalKafkaException(FatalMessage(e), e); }
        catch (KafkaException e) { Log.WarnEvery(TimeSpan.FromSeconds(10), "kafka-abort", $"Kafka abort failed: {e.Error.Reason}"); }
    }

    /// <summary>Puts the consumer back at the first offset of the batch, so the batch is read again.</summary>
    private void Rewind(Batch batch)
    {
        foreach (var (partition, offset) in batch.FirstOffsets)
        {
            try { _consumer.Seek(new TopicPartitionOffset(partition, offset)); }
            catch (KafkaException) { /* no longer ours: its new owner starts from the committed offset */ }
        }
    }

    // Besides fencing: errors no replay can cure (a partition that does not exist, missing permissions) stop the
    // instance with a message instead of replaying the same batch forever.
    internal static bool IsFatal(KafkaException e) =>
        e.Error.IsFatal || e.Error.Code is ErrorCode.ProducerFenced or ErrorCode.TransactionalIdAuthorizationFailed
            or ErrorCode.InvalidProducerEpoch or ErrorCode.Local_Fenced or ErrorCode.Local_UnknownPartition
            or ErrorCode.TopicAuthorizationFailed or ErrorCode.GroupAuthorizationFailed or ErrorCode.ClusterAuthorizationFailed;

    private string FatalMessage(KafkaException e) => FatalMessage(e, _settings.Kafka.TransactionalId);

    internal static string FatalMessage(KafkaException e, string transactionalId) => e.Error.Code is ErrorCode.ProducerFenced or ErrorCode.InvalidProducerEpoch or ErrorCode.Local_Fenced
        ? $"fenced: another instance took over transactional id '{transactionalId}'; this one must stop ({e.Error.Reason})"
        : $"fatal Kafka error ({e.Error.Code}): {e.Error.Reason}";

    private void OnAssigned(List<TopicPartition> assigned)
    {
        _withoutPartitions.Reset();
        var partitions = assigned.Select(p => p.Partition.Value).ToList();
        var clock = Stopwatch.StartNew();
        // An open transaction on a changelog partition (a previous owner's, still committing) ends within the
        // transaction timeout: committed or aborted by the coordinator. Wait that long for it, no longer.
        var openTransactionGrace = TimeSpan.FromMilliseconds(_settings.Kafka.TransactionTimeoutMs) + TimeSpan.FromSeconds(5);
        var restored = DedupChangelog.Restore(Kafka.Client(_settings.Kafka), _settings.Kafka.DedupTopic, partitions, _dedup,
            _settings.Processing.DedupWindowSeconds, openTransactionGrace, openTransactionGrace + TimeSpan.FromSeconds(Math.Max(30, _settings.Kafka.ConnectTimeoutSeconds)));
        Log.Info($"assigned partitions [{string.Join(",", partitions)}]; dedup window restored: {restored} entries in {clock.ElapsedMilliseconds} ms");
    }

    private void OnRevoked(IEnumerable<TopicPartition> revoked)
    {
        // Commit (or give up) the pending batch before its partitions go to another owner.
        CompletePending(holdThroughOutage: false);
        var partitions = revoked.Select(p => p.Partition.Value).ToHashSet();
        _withoutPartitions.Restart();
        // Their messages read so far belong to the next owner, who resumes from the committed offset.
        _collecting?.DropPartitions(partitions);
        _dedup.DropPartitions(partitions);
        Log.Info($"revoked partitions [{string.Join(",", partitions.Order())}]");
    }

    private static void OnKafkaLog(IClient _, LogMessage m)
    {
        if (m.Level <= SyslogLevel.Warning) Log.WarnEvery(TimeSpan.FromSeconds(30), "rdkafka:" + m.Facility, $"Kafka: {m.Message}");
    }

    private static void OnKafkaError(string client, Error e)
    {
        if (e.IsFatal) Log.Error($"Kafka {client}: fatal: {e.Reason}");
        else Log.WarnEvery(TimeSpan.FromSeconds(30), "kafka-error:" + e.Code, $"Kafka {client}: {e.Reason}");
    }

    public void Dispose()
    {
        WaitQuietly(_pending?.Feedback); // after an exception: the store is disposed next, and a write may still run
        _consumer.Dispose();
        _producer.Dispose();
    }
}

/// <summary>Exponential backoff with a cap; Wait returns false when stopping.</summary>
internal sealed class Backoff(int maxMs)
{
    private readonly Stopwatch _since = Stopwatch.StartNew();
    public int Attempts { get; private set; }
    public TimeSpan Elapsed => _since.Elapsed;

    public void Reset() => Attempts = 0;

    public bool Wait(CancellationToken stop)
    {
        var delay = Math.Min(maxMs, 100 * (1 << Math.Min(Attempts, 16)));
        Attempts++;
        return !stop.WaitHandle.WaitOne(delay + Random.Shared.Next(delay / 5 + 1));
    }
}
