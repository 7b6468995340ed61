using System.Diagnostics;
using Confluent.Kafka;

namespace PromoStream;

/// <summary>A Kafka error after which this instance must not go on: fenced by a newer instance, or a fatal producer state.</summary>
internal sealed class FatalKafkaException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// The stream task: consume a batch → validate → drop inactive → dedup and enrich → deliver. PostgreSQL decides, Kafka
/// mirrors: the ledger (Ledger.cs) decides each event and writes its rows in one PostgreSQL transaction; only after
/// that commit does the batch's Kafka transaction begin, carrying exactly the decided notifications, the dead letters
/// and the consumer offsets. A batch whose Kafka transaction does not commit is read again from the last committed
/// position, and the ledger recognises it: same input position, same stored rows, sent again. A DLQ redrive is this
/// same loop reading the DLQ, with a <see cref="RedriveSelection"/> choosing the records it feeds and ending the run.
/// </summary>
internal sealed class Processor : IDisposable
{
    /// <summary>A batch whose ledger write is queued or running; its Kafka transaction comes once the write commits.</summary>
    private sealed record Pending(Batch Batch, Plan Plan, Task<Decision[]?> Decisions);

    private readonly Settings _settings;
    private readonly CancellationToken _stop;
    private readonly bool _transactional;
    private readonly CampaignLedger _ledger;
    private readonly BatchEvaluator _evaluator;
    private readonly IConsumer<byte[]?, byte[]?> _consumer;
    private readonly IdleStop _idle;
    private readonly CapacityWatch _capacity;
    private readonly ProcessorStats _stats = new();
    private readonly Backoff _abortBackoff;
    private readonly TestHooks _hooks = TestHooks.FromEnvironment();
    private readonly RedriveSelection? _redrive;
    private IProducer<byte[], byte[]> _producer;
    private Task<TopicLimits>? _limitsLookup;
    private TopicLimits _limits;
    // The batch being read: a revocation removes its partitions' messages at once, so that messages read again
    // after a reassignment in the same poll stay in.
    private Batch? _collecting;
    private bool _closing;
    // Set when a commit may or may not have gone through: the replay must start where the group says, not guess.
    private bool _commitOutcomeUnknown;
    private readonly CommittedPositions _committed = new();
    private Action<DeliveryReport<byte[], byte[]>>? _onDelivery;
    private long _deliveryFailures;

    public ProcessorStats Stats => _stats;

    private Processor(Settings settings, int? stopWhenIdleSeconds, CancellationToken stop, Npgsql.NpgsqlDataSource dataSource,
        RedriveSelection? redrive)
    {
        _settings = settings;
        _redrive = redrive;
        _stop = stop;
        _transactional = settings.Processing.Transactions;
        _ledger = new CampaignLedger(dataSource, settings.Postgres.Describe(), settings.Kafka.GroupId, settings.Processing.RetryBackoffMaxMs);
        _hooks.Attach(_ledger);
        _evaluator = new BatchEvaluator(new SubscriberDirectory(dataSource, TimeSpan.FromSeconds(settings.Processing.SubscribersRefreshSeconds)),
            settings.Kafka.OutputTopic);
        _abortBackoff = new Backoff(settings.Processing.RetryBackoffMaxMs);
        _onDelivery = _transactional ? null : r => { if (r.Error.IsError) Interlocked.Increment(ref _deliveryFailures); };
        var producerLimit = settings.Kafka.MaxMessageBytes + Kafka.Headroom;
        _limits = new TopicLimits(producerLimit, producerLimit);
        _producer = BuildProducer();
        var consumerConfig = Kafka.Consumer(settings.Kafka);
        // A redrive must hear that a partition has nothing more, also one it starts at the end of.
        consumerConfig.EnablePartitionEof = redrive is not null;
        _consumer = new ConsumerBuilder<byte[]?, byte[]?>(consumerConfig)
            .SetLogHandler(OnKafkaLog).SetErrorHandler((_, e) => OnKafkaError("consumer", e))
            .SetPartitionsAssignedHandler((_, assigned) => OnAssigned(assigned))
            .SetPartitionsRevokedHandler((_, revoked) => OnRevoked(revoked.Select(r => r.TopicPartition)))
            .SetPartitionsLostHandler((_, lost) => OnRevoked(lost.Select(r => r.TopicPartition)))
            .Build();
        _idle = new IdleStop(stopWhenIdleSeconds, settings.Kafka, _consumer, _ledger, _committed);
        _capacity = new CapacityWatch(settings.Kafka, _consumer);
        _stats.Metrics.Watch(settings, _committed, _ledger, _evaluator.Subscribers);
    }

    /// <summary>
    /// Connects, checks, and runs until stopped, idle, or (a redrive) done. Throws for the caller to turn into an exit code.
    /// </summary>
    public static ProcessorStats Run(Settings settings, int? stopWhenIdleSeconds, CancellationToken stop, RedriveSelection? redrive = null)
    {
        using var slot = InstanceSlot.Claim(settings.Kafka);
        settings = settings with { Kafka = slot.Apply(settings.Kafka), Metrics = slot.Apply(settings.Metrics) };
        using var endpoint = MetricsEndpoint.Start(settings.Metrics); // up while connecting: alive, not ready
        using var dataSource = PostgresDatabase.CreateDataSource(settings.Postgres.ConnectionString);
        PostgresDatabase.WaitUntilReachable(dataSource, settings.Postgres.Describe(),
            TimeSpan.FromSeconds(settings.Postgres.ConnectTimeoutSeconds), stop);
        new PostgresDatabase(dataSource).CheckSchema();
        Kafka.WaitUntilReachable(settings.Kafka, TimeSpan.FromSeconds(settings.Kafka.ConnectTimeoutSeconds));
        Kafka.EnsureTopics(settings.Kafka);
        using var processor = new Processor(settings, stopWhenIdleSeconds, stop, dataSource, redrive);
        endpoint?.Attach(processor._stats.Metrics, new Health(settings, processor._stats.Metrics, stop));
        processor.Loop();
        return processor._stats;
    }

    private IProducer<byte[], byte[]> BuildProducer() =>
        new ProducerBuilder<byte[], byte[]>(Kafka.Producer(_settings.Kafka, _transactional, _limits.BatchSize))
            .SetLogHandler(OnKafkaLog).SetErrorHandler((_, e) => OnKafkaError("producer", e)).Build();

    private void Loop()
    {
        LookUpTopicLimits();
        if (_transactional) InitTransactions();
        _consumer.Subscribe(_settings.Kafka.InputTopic);
        var k = _settings.Kafka;
        Log.Info($"processing {k.InputTopic} -> {k.OutputTopic} and PostgreSQL at {_settings.Postgres.Describe()}; Kafka at {k.BootstrapServers} " +
                 $"(group {k.GroupId}{(k.GroupInstanceId is { } g ? $", static member {g}" : "")}, " +
                 $"transactional id {(_transactional ? k.TransactionalId : "none: transactions off")})",
            ("component", "processor"), ("input_topic", k.InputTopic), ("output_topic", k.OutputTopic), ("dlq_topic", k.DlqTopic),
            ("postgres", _settings.Postgres.Describe()), ("bootstrap_servers", k.BootstrapServers), ("group_id", k.GroupId),
            ("group_instance_id", k.GroupInstanceId), ("transactional_id", _transactional ? k.TransactionalId : null));
        var lastStats = Stopwatch.StartNew();
        var statsShown = "";
        while (!_stop.IsCancellationRequested)
        {
            _stats.Metrics.LoopTurned();
            var batch = ConsumeBatch();
            if (!batch.IsEmpty)
            {
                Step(batch);
                _idle.Activity();
            }
            else FinishAll(); // no next batch to overlap with: finish these now
            if (lastStats.Elapsed.TotalSeconds >= _settings.Processing.StatsIntervalSeconds)
            {
                var line = _stats.Line() + _redrive?.Progress();
                if (line != statsShown) Log.Info(statsShown = line, _stats.Fields()); // an idle stream does not repeat itself
                lastStats.Restart();
            }
            _capacity.CheckNowAndThen();
            if (_idle.ShouldStop()) { Log.Info($"input drained and no input for {_idle.Seconds}s; stopping"); break; }
            if (_inFlight.Count == 0 && _redrive?.Done(_committed) == true) { Log.Info("redrive: every DLQ partition read and committed up to its end at start; stopping"); break; }
        }
        FinishAll();
        RecordPositionsNow();
        _capacity.CheckNowAndThen(now: true);
        Log.Info(_stats.Line(), _stats.Fields());
        _closing = true;
        _consumer.Close(); // leaves the group now (dynamic membership), so the partitions move without waiting
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

    /// <summary>
    /// Asks the broker for the output and DLQ topics' max.message.bytes in the background, while the producer starts
    /// and the group is joined; the first evaluation waits for the answer, since a campaign claimed against a wrong
    /// limit could not be sent. A record the broker still refuses makes Deliver ask again.
    /// </summary>
    private void LookUpTopicLimits() => _limitsLookup = Task.Run(() => Kafka.ReadTopicLimits(_settings.Kafka));

    private void AwaitTopicLimits()
    {
        if (_limitsLookup is not { } lookup) return;
        _limitsLookup = null;
        ApplyTopicLimits(lookup.GetAwaiter().GetResult());
    }

    /// <summary>Only while no Kafka transaction runs: it may rebuild the producer.</summary>
    private void ApplyTopicLimits(TopicLimits limits)
    {
        if (limits.Dlq < _settings.Kafka.MaxMessageBytes)
            Log.WarnEvery(TimeSpan.FromMinutes(10), "dlq-limit",
                $"DLQ topic {_settings.Kafka.DlqTopic} accepts records up to {limits.Dlq} bytes, input up to {_settings.Kafka.MaxMessageBytes} is read: " +
                "larger dead letters are stored cut (headers dlq.original.size, dlq.cut.size); raise its max.message.bytes to keep them whole");
        var rebuild = limits.BatchSize != _limits.BatchSize;
        _limits = limits;
        if (rebuild) RecreateProducer();
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
        batch.Clock.Restart();
        Take(batch, first);
        var maxWait = TimeSpan.FromMilliseconds(_settings.Processing.BatchMaxMs);
        while (batch.Messages.Count < _settings.Processing.BatchMaxEvents)
        {
            var left = maxWait - batch.Clock.Elapsed;
            if (left <= TimeSpan.Zero) break;
            var next = ConsumeOne(TimeSpan.Zero);
            if (next is null)
            {
                if (_inFlight.Count == 0 || _inFlight.Last().Decisions.IsCompleted) break;
                next = ConsumeOne(left < PendingPollInterval ? left : PendingPollInterval);
                if (next is null) continue;
            }
            Take(batch, next);
        }
    }

    /// <summary>A redrive feeds only the records it selects; those it passes over move its position all the same.</summary>
    private void Take(Batch batch, ConsumeResult<byte[]?, byte[]?> message)
    {
        switch (_redrive?.Judge(message) ?? Selection.Feed)
        {
            case Selection.Feed: batch.Add(message); break;
            case Selection.PassOver: batch.PassOver(message); break;
            case Selection.Beyond: break; // after the end captured at the redrive's start: the next run's
        }
    }

    private static readonly TimeSpan PendingPollInterval = TimeSpan.FromMilliseconds(2);

    private ConsumeResult<byte[]?, byte[]?>? ConsumeOne(TimeSpan timeout)
    {
        try
        {
            var result = _consumer.Consume(timeout);
            if (_hooks.PauseConsuming) return null; // test hook: in the group, owning partitions, committing nothing
            if (result is { IsPartitionEOF: true }) _redrive?.ReachedEnd(result.TopicPartitionOffset);
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
    /// One step of the pipeline: the new batch is evaluated, its ledger write is queued behind the previous batch's
    /// (one writer connection, input order), and its Kafka transaction is queued behind the previous batch's, to run
    /// as soon as both its own rows are written and the previous transaction has committed. So the database, the Kafka
    /// commits and the loop all work at once, commits stay in input order, and no transaction waits for the loop.
    /// </summary>
    private void Step(Batch batch)
    {
        var plan = Evaluate(batch);
        if (plan is null) return; // Evaluate has put the consumer back
        var previous = _inFlight.Count > 0 ? _inFlight.Last() : null;
        var pending = new Pending(batch, plan, RecordAfter(previous?.Decisions, plan));
        // After a transaction that did not commit, the ones behind it must not commit either: they are read again.
        var delivered = (previous?.Delivered ?? Task.FromResult(true))
            .ContinueWith(before => before.GetAwaiter().GetResult() && Deliver(pending), TaskScheduler.Default);
        _inFlight.Enqueue(new InFlight(pending, delivered));
        Settle(MaxInFlight);
    }

    // Batches whose ledger write or Kafka transaction has not finished: one delivering, one being written, and the
    // loop reading the next. More would only hold more memory.
    private const int MaxInFlight = 2;

    private sealed record InFlight(Pending Batch, Task<bool> Delivered)
    {
        public Task<Decision[]?> Decisions => Batch.Decisions;
    }

    private readonly Queue<InFlight> _inFlight = new();

    /// <summary>
    /// Collects the batches whose transactions have finished, waiting while more than <paramref name="keep"/> are in
    /// flight. False when a transaction did not commit: then every batch in flight (and <paramref name="alsoRewind"/>,
    /// read after them) is given up and read again from the last committed position. A fatal error is rethrown here,
    /// on the loop thread.
    /// </summary>
    private bool Settle(int keep, Batch? alsoRewind = null)
    {
        while (_inFlight.TryPeek(out var head) && (_inFlight.Count > keep || head.Delivered.IsCompleted))
        {
            if (head.Delivered.GetAwaiter().GetResult())
            {
                _inFlight.Dequeue();
                continue;
            }
            var given = _inFlight.ToList();
            _inFlight.Clear();
            // The writes behind the failed transaction may still run on the writer connection: none may be left running
            // when the next batch's write starts there.
            foreach (var f in given) { WaitQuietly(f.Delivered); WaitQuietly(f.Decisions); }
            RewindToCommitted([.. given.Select(f => f.Batch.Batch), alsoRewind]);
            return false;
        }
        return true;
    }

    /// <summary>Delivers everything in flight, before an idle moment, a rebalance or the exit.</summary>
    private bool FinishAll(Batch? alsoRewind = null) => Settle(0, alsoRewind);

    /// <summary>
    /// Ledger writes run one at a time on one connection, each as soon as the one before it ends; the batch is encoded
    /// for it here, while the one before is being written.
    /// </summary>
    private Task<Decision[]?> RecordAfter(Task<Decision[]?>? previous, Plan plan)
    {
        var staged = _ledger.Stage(plan.Entries, plan.Trigger);
        Decision[]? Record() => _stats.Metrics.Timed("ledger_write", () => _ledger.Record(staged, _committed.Unrecorded(), _stop));
        return previous is null ? Task.Run(Record) : previous.ContinueWith(_ => Record(), TaskScheduler.Default);
    }

    private static void WaitQuietly(Task? task) => task?.ContinueWith(_ => { }, TaskScheduler.Default).Wait();

    /// <summary>
    /// Parses, judges activity, looks up subscribers (held while PostgreSQL is unreachable) and sets aside what goes
    /// to the DLQ whatever the ledger says. Null when stopping during a hold.
    /// </summary>
    private Plan? Evaluate(Batch batch)
    {
        // Null when the batch (and any pending one) was given up; the consumer is put back before returning.
        var backoff = new Backoff(_settings.Processing.RetryBackoffMaxMs);
        while (true)
        {
            try
            {
                AwaitTopicLimits();
                var plan = _stats.Metrics.Timed("evaluate", () => _evaluator.Evaluate(batch, _limits.Output));
                if (backoff.Attempts > 0) Log.Info("PostgreSQL is reachable again; resuming");
                _stats.Metrics.Resumed("evaluate");
                return plan;
            }
            catch (Exception e) when (Failures.Classify(e) == FailureClass.Transient)
            {
                Log.WarnEvery(TimeSpan.FromSeconds(30), "postgres",
                    $"PostgreSQL at {_settings.Postgres.Describe()} failed (transient: {PostgresDatabase.Describe(e)}); holding the batch, " +
                    $"retrying with back-off up to {_settings.Processing.RetryBackoffMaxMs} ms");
                _stats.Metrics.Retrying(FailureClass.Transient, "evaluate");
                // No reason to keep the batches before this one waiting as well; if they fail, all are read again.
                if (!FinishAll(alsoRewind: batch)) return null;
                if (!backoff.Wait(_stop)) { Rewind(batch); return null; }
            }
            catch (Exception e) when (e is Npgsql.PostgresException)
            {
                throw new DatabaseMisconfiguredException(Failures.DatabaseAdvice(e, _settings.Postgres.Describe()), e);
            }
        }
    }

    /// <summary>
    /// Sends a batch's decided output in one Kafka transaction, once its ledger write has committed. True when
    /// committed; false when the batch must be read again from the last committed position. Each Kafka failure class
    /// has its answer here: abortable → abort and replay; a transaction the broker timed out (fenced after too long)
    /// or a commit whose outcome stays unknown → a new producer, and replay; fenced by another instance → exit 3.
    /// </summary>
    private bool Deliver(Pending pending)
    {
        var decisions = pending.Decisions.GetAwaiter().GetResult(); // a misconfigured database throws here: exit 1
        if (decisions is null) return false; // stopping during a database hold
        var (batch, plan, _) = pending;
        var opened = Stopwatch.StartNew();
        try
        {
            if (_transactional) _producer.BeginTransaction();
            var counts = ProduceOutput(plan, decisions);
            _hooks.BeforeKafkaCommit();
            Commit(batch);
            _stats.Metrics.PhaseTook("kafka_transaction", opened.Elapsed);
            _committed.Add(batch.NextOffsets);
            _stats.Committed(batch.Messages.Count, counts, _ledger.RowsInserted, batch.Clock.Elapsed, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            if (_stats.Transactions == 1)
                Log.Info($"first batch committed {(DateTime.Now - Process.GetCurrentProcess().StartTime).TotalSeconds:0.0}s after start");
            _abortBackoff.Reset();
            return true;
        }
        catch (KafkaException e) when (Failures.IsFenced(e) && opened.ElapsedMilliseconds >= _settings.Kafka.TransactionTimeoutMs - 1000)
        {
            // The broker aborted a transaction that outlived transaction.timeout.ms and bumped the epoch: librdkafka
            // reports that as fenced, exactly like a takeover. Ours ran that long, so it is the timeout: start over.
            Log.Warn($"Kafka transaction open for {opened.Elapsed.TotalSeconds:0.0}s outlived transaction.timeout.ms ({e.Error.Reason}); new producer, replaying the batch");
            _stats.Aborted();
            RecreateProducer();
            return false;
        }
        catch (KafkaException e) when (Failures.IsFatal(e))
        {
            throw new FatalKafkaException(Failures.FatalMessage(e, _settings.Kafka.TransactionalId), e);
        }
        catch (KafkaException e) when (e.Error.Code is ErrorCode.MsgSizeTooLarge)
        {
            Log.Warn($"Kafka refused a record as too large ({e.Error.Reason}); re-reading the topics' limits and replaying the batch");
            Abort(e);
            ApplyTopicLimits(Kafka.ReadTopicLimits(_settings.Kafka));
            return false;
        }
        catch (ProducerStuckException e)
        {
            Log.Warn($"{e.Message}; new producer, replaying the batch");
            _stats.Aborted();
            RecreateProducer(abandon: true);
            return false;
        }
        catch (CommitOutcomeUnknownException e)
        {
            Log.Warn($"{e.Message}; new producer, resuming from the group's committed position");
            _stats.Aborted();
            RecreateProducer();
            _commitOutcomeUnknown = true;
            return false;
        }
        catch (KafkaException e)
        {
            Abort(e);
            return false;
        }
    }

    private CountsOfBatch ProduceOutput(Plan plan, Decision[] decisions)
    {
        var k = _settings.Kafka;
        long notified = 0, replayed = 0, duplicates = 0, inactive = 0, noSubscribers = 0, notifications = 0;
        var timestamps = new List<long>();
        var deadLetters = new List<DeadLetter>(plan.DeadLetters);
        var output = new TopicPartition(k.OutputTopic, Partition.Any);
        // librdkafka copies a record while it is produced, so one record and its arrays serve every notification of the
        // same size: a fresh record, key, value and headers each would be half of all the processor allocates (measured).
        var record = new Message<byte[], byte[]> { Key = [], Value = [], Headers = [] };
        for (var i = 0; i < decisions.Length; i++)
        {
            var decision = decisions[i];
            switch (decision.Verdict)
            {
                case Verdict.Duplicate: duplicates++; continue;
                case Verdict.Inactive: inactive++; continue;
                case Verdict.Rejected: deadLetters.Add(new DeadLetter(plan.EntrySources[i], decision.Reason!, decision.SqlState)); continue;
                case Verdict.Notified: notified++; break;
                case Verdict.Replayed: replayed++; break;
            }
            if (decision.Clients.Count == 0) { noSubscribers++; continue; }
            var template = new NotificationTemplate(plan.Entries[i].Campaign, decision.Trigger);
            long bytes = 0;
            foreach (var client in decision.Clients)
            {
                record.Key = NotificationTemplate.KeyInto(client, record.Key);
                record.Value = template.Into(client, record.Value);
                bytes += record.Key.Length + record.Value.Length;
                Produce(output, record);
            }
            _capacity.Produced(decision.Clients.Count, bytes);
            notifications += decision.Clients.Count;
            timestamps.Add(plan.EntrySources[i].Message.Timestamp.UnixTimestampMs);
        }
        var dlq = new TopicPartition(k.DlqTopic, Partition.Any);
        foreach (var letter in deadLetters) Produce(dlq, DeadLetters.ToRecord(letter, _limits.Dlq));
        return new CountsOfBatch(notified, replayed, duplicates, inactive, noSubscribers, deadLetters.Count, notifications, timestamps,
            deadLetters.ConvertAll(d => d.MetricReason));
    }

    private void Produce(TopicPartition destination, Message<byte[], byte[]> message)
    {
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

    private void Commit(Batch batch)
    {
        var timeout = TimeSpan.FromMilliseconds(_settings.Kafka.TransactionTimeoutMs);
        if (_transactional)
        {
            SendOffsetsToTransaction(batch, timeout);
            CommitTransaction(timeout);
            return;
        }
        if (_producer.Flush(timeout) > 0 | Interlocked.Exchange(ref _deliveryFailures, 0) > 0)
            throw new KafkaException(new Error(ErrorCode.Local_Fail, "some records were not delivered"));
        _consumer.Commit(Offsets(batch));
    }

    /// <summary>
    /// librdkafka's SendOffsetsToTransaction can block past its timeout, for good, when the group coordinator was
    /// unreachable (librdkafka issues 5456 and 5511; seen here after a broker outage). So the call runs aside, and a
    /// producer stuck in it is abandoned: it is disposed only if the call ever returns, and the new producer's
    /// InitTransactions aborts the transaction it left open (nothing of it was committed).
    /// </summary>
    private void SendOffsetsToTransaction(Batch batch, TimeSpan timeout)
    {
        var producer = _producer;
        var offsets = Offsets(batch);
        var metadata = _consumer.ConsumerGroupMetadata;
        var call = Task.Run(() => producer.SendOffsetsToTransaction(offsets, metadata, timeout));
        if (call.ContinueWith(_ => { }, TaskScheduler.Default).Wait(timeout + StuckCallGrace))
        {
            call.GetAwaiter().GetResult();
            return;
        }
        _ = call.ContinueWith(_ => producer.Dispose(), TaskScheduler.Default);
        throw new ProducerStuckException($"Kafka SendOffsetsToTransaction did not return within {(timeout + StuckCallGrace).TotalSeconds:0}s");
    }

    private static readonly TimeSpan StuckCallGrace = TimeSpan.FromSeconds(5);

    private sealed class ProducerStuckException(string message) : Exception(message);

    /// <summary>
    /// Retrying a commit whose outcome is unknown is librdkafka's documented way to learn it; without KIP-890 a commit
    /// can stay unknown, so after the transaction timeout the producer is given up rather than waited on forever.
    /// </summary>
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
                if (backoff.Elapsed >= timeout / 2) throw new CommitOutcomeUnknownException($"Kafka commit still unconfirmed after {backoff.Elapsed.TotalSeconds:0}s ({e.Error.Reason})");
                Log.WarnEvery(TimeSpan.FromSeconds(10), "kafka-commit", $"Kafka commit not confirmed ({e.Error.Reason}); retrying");
                backoff.Wait(_stop);
            }
        }
    }

    private sealed class CommitOutcomeUnknownException(string message) : Exception(message);

    private void Abort(KafkaException e)
    {
        _stats.Aborted();
        Log.WarnEvery(TimeSpan.FromSeconds(10), "kafka-txn", $"Kafka transaction failed ({e.Error.Code}: {e.Error.Reason}); aborting and replaying the batch");
        if (_transactional)
        {
            try { _producer.AbortTransaction(TimeSpan.FromSeconds(30)); }
            catch (KafkaException abort) when (Failures.IsFatal(abort)) { throw new FatalKafkaException(Failures.FatalMessage(abort, _settings.Kafka.TransactionalId), abort); }
            catch (KafkaException abort) { Log.WarnEvery(TimeSpan.FromSeconds(10), "kafka-abort", $"Kafka abort failed: {abort.Error.Reason}; new producer"); RecreateProducer(); }
        }
        _abortBackoff.Wait(_stop); // grows across consecutive aborts, so a failing record does not spin
    }

    /// <param name="abandon">The old producer is stuck in a call: it is disposed when that call returns, if ever, not here.</param>
    private void RecreateProducer(bool abandon = false)
    {
        if (!abandon)
            try { _producer.Dispose(); } catch (KafkaException) { /* its transaction is aborted by the new producer's init */ }
        _producer = BuildProducer();
        if (_transactional) InitTransactions();
    }

    private static List<TopicPartitionOffset> Offsets(Batch batch) =>
        batch.NextOffsets.Select(o => new TopicPartitionOffset(o.Key, o.Value)).ToList();

    /// <summary>
    /// Puts the consumer back at the last committed position of each partition of these batches: the group's
    /// committed offset where the broker keeps one (a commit whose outcome was unknown may have gone through), else
    /// the first offset of the earliest batch.
    /// </summary>
    private void RewindToCommitted(params Batch?[] batches)
    {
        var first = new Dictionary<TopicPartition, long>();
        foreach (var batch in batches.OfType<Batch>())
            foreach (var (tp, offset) in batch.FirstOffsets)
                first[tp] = first.TryGetValue(tp, out var o) ? Math.Min(o, offset) : offset;
        if (first.Count == 0) return;
        var group = GroupCommitted(first.Keys);
        for (var attempt = 1; group is null && _commitOutcomeUnknown && attempt <= 5; attempt++)
        {
            _abortBackoff.Wait(_stop);
            group = GroupCommitted(first.Keys);
        }
        if (group is null && _commitOutcomeUnknown)
            throw new FatalKafkaException("a Kafka commit's outcome is unknown and the group's offsets cannot be read; stopping rather than guessing " +
                                          "(a restart resumes from the group's committed offsets)", new KafkaException(ErrorCode.Local_TimedOut));
        _commitOutcomeUnknown = false;
        group ??= [];
        foreach (var (tp, offset) in first)
        {
            var position = group.TryGetValue(tp, out var committed) && committed >= offset ? committed : offset;
            try { _consumer.Seek(new TopicPartitionOffset(tp, position)); }
            catch (KafkaException) { /* no longer ours: its new owner starts from the committed offset */ }
        }
    }

    /// <summary>The group's committed offsets (absent for a partition without one); null when the broker does not answer.</summary>
    private Dictionary<TopicPartition, long>? GroupCommitted(IEnumerable<TopicPartition> partitions)
    {
        try
        {
            return _consumer.Committed(partitions, TimeSpan.FromSeconds(10))
                .Where(c => c.Offset.Value >= 0).ToDictionary(c => c.TopicPartition, c => c.Offset.Value);
        }
        catch (KafkaException e)
        {
            Log.WarnEvery(TimeSpan.FromSeconds(30), "committed", $"cannot read the group's committed offsets ({e.Error.Reason})");
            return null;
        }
    }

    private void Rewind(Batch batch)
    {
        foreach (var (tp, offset) in batch.FirstOffsets)
        {
            try { _consumer.Seek(new TopicPartitionOffset(tp, offset)); }
            catch (KafkaException) { }
        }
    }

    /// <summary>
    /// Records the committed positions now, before the partitions leave this instance, bounded so that a stop never
    /// hangs on a database that is down (the positions are then one batch behind, which the ledger tolerates).
    /// </summary>
    private void RecordPositionsNow()
    {
        using var bounded = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try { _ledger.RecordPositions(_committed.All(), bounded.Token); }
        catch (Exception e) when (e is Npgsql.NpgsqlException or DatabaseMisconfiguredException)
        {
            Log.Warn($"could not record the committed input positions in PostgreSQL ({e.Message}); the group's offsets still hold them");
        }
    }

    /// <summary>
    /// Where the group has no committed offset for a partition (a broker that keeps none for transactions, offsets
    /// expired), resume from the position recorded in PostgreSQL instead of auto.offset.reset. The group's own offset,
    /// including one an operator reset, wins.
    /// </summary>
    private IEnumerable<TopicPartitionOffset> OnAssigned(List<TopicPartition> assigned)
    {
        // Cooperative rebalancing: `assigned` holds only the partitions added; those already owned stay as they are.
        _idle.Assigned(assigned.Count > 0 || _consumer.Assignment.Count > 0);
        if (assigned.Count == 0) return [];
        _stats.Metrics.Assigned(assigned);
        var (offsets, fromRecord) = StartingOffsets(assigned);
        var holding = _consumer.Assignment.Concat(assigned).ToList();
        Log.Info($"assigned partitions [{Partitions(assigned)}]; holding [{Partitions(holding)}]" +
                 (fromRecord.Count > 0 ? $"; resuming [{string.Join(",", fromRecord)}] from the positions recorded in PostgreSQL" : ""),
            ("component", "processor"), ("partitions", Numbers(assigned)), ("holding", Numbers(holding)), ("resumed_from_postgres", fromRecord));
        return offsets;
    }

    private static List<int> Numbers(IEnumerable<TopicPartition> partitions) => partitions.Select(p => p.Partition.Value).Distinct().Order().ToList();

    private static string Partitions(IEnumerable<TopicPartition> partitions) => string.Join(",", Numbers(partitions));

    private (List<TopicPartitionOffset> Offsets, List<int> FromRecord) StartingOffsets(List<TopicPartition> assigned)
    {
        var fromGroup = assigned.Select(tp => new TopicPartitionOffset(tp, Offset.Unset)).ToList();
        // When the group's offsets cannot be read, librdkafka fetches them itself: the recorded positions lag behind
        // them and must never override them.
        if (_closing || GroupCommitted(assigned) is not { } group || RecordedPositions() is not { } recorded) return (fromGroup, []);
        var fromRecord = new List<int>();
        var offsets = assigned.Select(tp =>
        {
            if (group.ContainsKey(tp) || !recorded.TryGetValue(tp.Partition.Value, out var next)) return new TopicPartitionOffset(tp, Offset.Unset);
            fromRecord.Add(tp.Partition.Value);
            return new TopicPartitionOffset(tp, next);
        }).ToList();
        return (offsets, fromRecord);
    }

    /// <summary>
    /// The positions recorded in PostgreSQL, tried a few times: without them a partition the group has no offset for
    /// starts at auto.offset.reset (re-reading is safe, the ledger drops what Kafka already has).
    /// </summary>
    private Dictionary<int, long>? RecordedPositions()
    {
        var backoff = new Backoff(1000);
        for (var attempt = 1; ; attempt++)
        {
            try { return _ledger.RecordedPositions(_settings.Kafka.InputTopic); }
            catch (Exception e) when (Failures.Classify(e) == FailureClass.Transient && attempt < 4 && backoff.Wait(_stop)) { }
            catch (Exception e) when (Failures.Classify(e) == FailureClass.Transient)
            {
                Log.Warn($"cannot read the recorded input positions from PostgreSQL ({PostgresDatabase.Describe(e)}); " +
                         "partitions without a committed offset start at auto.offset.reset");
                return null;
            }
        }
    }

    /// <summary>
    /// Only the partitions that change owner are revoked (cooperative rebalancing). The batches in flight (at most two,
    /// each closed within batch_max_ms) are delivered before those partitions go: if that fails, the next owner replays
    /// them and the ledger recognises them. Of the batch being read, only the revoked partitions' messages are dropped;
    /// the partitions kept go on from where they are.
    /// </summary>
    private void OnRevoked(IEnumerable<TopicPartition> revoked)
    {
        var partitions = revoked.ToHashSet();
        if (partitions.Count == 0) return;
        _stats.Metrics.Revoked(partitions);
        // A batch in flight that fails rewinds the kept partitions too; what the batch being read holds of them lies
        // beyond that point, so it is given up whole and read again.
        if (!FinishAll(alsoRewind: _collecting)) _collecting?.Clear();
        RecordPositionsNow(); // for brokers that keep no transactional offsets
        _idle.Assigned(_consumer.Assignment.Any(tp => !partitions.Contains(tp)));
        _collecting?.DropPartitions(partitions);
        var held = _consumer.Assignment.Where(tp => !partitions.Contains(tp)).ToList();
        Log.Info($"revoked partitions [{Partitions(partitions)}]; holding [{Partitions(held)}]",
            ("component", "processor"), ("partitions", Numbers(partitions)), ("holding", Numbers(held)));
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
        // After an exception: the ledger and the producer are disposed next, and a write or a commit may still run.
        foreach (var f in _inFlight) { WaitQuietly(f.Delivered); WaitQuietly(f.Decisions); }
        _ledger.Dispose();
        _idle.Dispose();
        _capacity.Dispose();
        _stats.Metrics.Dispose();
        _consumer.Dispose();
        _producer.Dispose();
    }
}
