using System.Globalization;
using System.Text;
using Confluent.Kafka;

namespace PromoStream;

/// <summary>What the loop does with one record read from a redrive's input.</summary>
internal enum Selection
{
    /// <summary>Fed through the pipeline, as the event it was.</summary>
    Feed,
    /// <summary>Not fed, but passed over: the redrive's position moves past it (filtered out, or stored cut).</summary>
    PassOver,
    /// <summary>At or after the end captured at start (the redrive's own dead letters among them): not this run's.</summary>
    Beyond,
}

/// <summary>
/// The operator's choice of dead letters: by reason (a part of dlq.reason), by SQLSTATE (dlq.sqlstate, or its class
/// when two characters are given) and by the time the letter was written to the DLQ (the DLQ record's timestamp;
/// since inclusive, until exclusive). No filter selects every letter.
/// </summary>
internal sealed record RedriveFilter(string? Reason, string? SqlState, DateTimeOffset? Since, DateTimeOffset? Until)
{
    public static readonly RedriveFilter Everything = new(null, null, null, null);

    public bool Selects(ConsumeResult<byte[]?, byte[]?> letter)
    {
        if (Reason is { } part && !DeadLetterHeaders.Text(letter, "dlq.reason").Contains(part, StringComparison.OrdinalIgnoreCase)) return false;
        if (SqlState is { } code && !DeadLetterHeaders.Text(letter, "dlq.sqlstate").StartsWith(code, StringComparison.OrdinalIgnoreCase)) return false;
        if (Since is null && Until is null) return true;
        if (letter.Message.Timestamp.Type == TimestampType.NotAvailable) return false;
        var written = letter.Message.Timestamp.UnixTimestampMs;
        return (Since is not { } since || written >= since.ToUnixTimeMilliseconds()) && (Until is not { } until || written < until.ToUnixTimeMilliseconds());
    }

    public override string ToString()
    {
        var parts = new List<string>();
        if (Reason is not null) parts.Add($"reason contains \"{Reason}\"");
        if (SqlState is not null) parts.Add($"sqlstate {(SqlState.Length == 2 ? "class " : "")}{SqlState}");
        if (Since is { } s) parts.Add($"written since {s.UtcDateTime:yyyy-MM-ddTHH:mm:ssZ}");
        if (Until is { } u) parts.Add($"written before {u.UtcDateTime:yyyy-MM-ddTHH:mm:ssZ}");
        return parts.Count == 0 ? "every dead letter" : string.Join(", ", parts);
    }
}

/// <summary>The headers DeadLetters.ToRecord writes, read back.</summary>
internal static class DeadLetterHeaders
{
    /// <summary>The last value of a header (a letter carries each dlq header once), or "" without it.</summary>
    public static string Text(ConsumeResult<byte[]?, byte[]?> letter, string name) =>
        letter.Message.Headers is { } headers && headers.TryGetLastBytes(name, out var value) && value is not null ? Encoding.UTF8.GetString(value) : "";

    /// <summary>A letter stored cut to fit the DLQ topic: its bytes are not the event any more.</summary>
    public static bool IsCut(ConsumeResult<byte[]?, byte[]?> letter) => Text(letter, "dlq.cut.size").Length > 0 || Text(letter, "dlq.original.size").Length > 0;

    /// <summary>
    /// The record as the event it was: its key, bytes and own headers, without the previous dead-lettering's. Should
    /// it be dead-lettered again, its new letter then says why now and points back at this DLQ record, which names
    /// the original input position.
    /// </summary>
    public static void StripFrom(ConsumeResult<byte[]?, byte[]?> letter)
    {
        if (letter.Message.Headers is not { } headers) return;
        var own = new Headers();
        foreach (var h in headers)
            if (!h.Key.StartsWith("dlq.", StringComparison.Ordinal)) own.Add(h.Key, h.GetValueBytes());
        letter.Message.Headers = own;
    }
}

/// <summary>
/// Which records of the DLQ one redrive run feeds back through the pipeline: those before the end offsets captured at
/// its start that its filter selects and that were stored whole. It also tells the loop when the run is over: every
/// partition read up to its captured end, and everything read there committed. Each record is counted once per run,
/// however often a failed transaction makes the loop read it again. Used from the loop's thread only.
/// </summary>
internal sealed class RedriveSelection(RedriveFilter filter, IReadOnlyDictionary<TopicPartition, long> ends)
{
    // Per partition: the first and the highest offset read below the end, and whether the end has been reached.
    private readonly Dictionary<TopicPartition, long> _first = [];
    private readonly Dictionary<TopicPartition, long> _highest = [];
    private readonly HashSet<TopicPartition> _reachedEnd = [];
    private readonly Dictionary<string, long> _selectedByReason = new(StringComparer.Ordinal);

    public IReadOnlyDictionary<TopicPartition, long> Ends => ends;
    public long Selected { get; private set; }
    public long SkippedByFilter { get; private set; }
    public long Cut { get; private set; }
    public bool Completed { get; private set; }

    public IReadOnlyDictionary<string, long> SelectedByReason => _selectedByReason;

    public Selection Judge(ConsumeResult<byte[]?, byte[]?> record)
    {
        var tp = record.TopicPartition;
        var offset = record.Offset.Value;
        if (!ends.TryGetValue(tp, out var end) || offset >= end)
        {
            _reachedEnd.Add(tp);
            return Selection.Beyond;
        }
        if (offset == end - 1) _reachedEnd.Add(tp);
        var firstTime = !_highest.TryGetValue(tp, out var highest) || offset > highest;
        if (firstTime) _highest[tp] = offset;
        _first.TryAdd(tp, offset);
        var selection = Decide(record, firstTime);
        if (selection == Selection.Feed) DeadLetterHeaders.StripFrom(record);
        return selection;
    }

    private Selection Decide(ConsumeResult<byte[]?, byte[]?> record, bool count)
    {
        if (!filter.Selects(record))
        {
            if (count) SkippedByFilter++;
            return Selection.PassOver;
        }
        if (DeadLetterHeaders.IsCut(record))
        {
            if (count)
            {
                Cut++;
                Log.Warn($"redrive: DLQ record {record.Topic}/{record.Partition.Value}@{record.Offset.Value} was stored cut " +
                         $"({DeadLetterHeaders.Text(record, "dlq.original.size")} bytes, {DeadLetterHeaders.Text(record, "dlq.cut.size")} kept) and cannot be redriven; " +
                         $"its event was read at {DeadLetterHeaders.Text(record, "dlq.source.topic")}/{DeadLetterHeaders.Text(record, "dlq.source.partition")}" +
                         $"@{DeadLetterHeaders.Text(record, "dlq.source.offset")}");
            }
            return Selection.PassOver;
        }
        if (count)
        {
            Selected++;
            var reason = DeadLetterHeaders.Text(record, "dlq.reason") is { Length: > 0 } r ? r : "(no dlq.reason header)";
            _selectedByReason[reason] = _selectedByReason.GetValueOrDefault(reason) + 1;
        }
        return Selection.Feed;
    }

    /// <summary>The consumer found no more records in a partition (librdkafka's partition EOF) at this offset.</summary>
    public void ReachedEnd(TopicPartitionOffset at)
    {
        if (ends.TryGetValue(at.TopicPartition, out var end) && at.Offset.Value >= end) _reachedEnd.Add(at.TopicPartition);
    }

    /// <summary>Every partition read up to its captured end (a dry run needs no more).</summary>
    public bool AllRead() => ends.Keys.All(_reachedEnd.Contains);

    /// <summary>
    /// Every partition read up to its captured end, and the Kafka commits of this run past everything it read there.
    /// Once true it stays true: the run is over.
    /// </summary>
    public bool Done(CommittedPositions committed)
    {
        if (Completed) return true;
        if (!AllRead()) return false;
        var reached = _highest.Count == 0 ? [] : committed.ByPartition(_highest.Keys.First().Topic);
        foreach (var (tp, highest) in _highest)
            if (!reached.TryGetValue(tp.Partition.Value, out var next) || next <= highest) return false;
        return Completed = true;
    }

    /// <summary>For the stats line: how far the run has read.</summary>
    public string Progress()
    {
        long read = 0, range = 0;
        foreach (var (tp, end) in ends)
        {
            if (!_first.TryGetValue(tp, out var first)) continue;
            read += _highest[tp] - first + 1;
            range += end - first;
        }
        return $" | redrive: partitions read to the end {ends.Keys.Count(_reachedEnd.Contains)}/{ends.Count}, offsets read {read} of {range} " +
               $"(selected={Selected} skipped_by_filter={SkippedByFilter} cut={Cut})";
    }

    public static string DescribeEnds(IReadOnlyDictionary<TopicPartition, long> ends) =>
        string.Join(",", ends.OrderBy(e => e.Key.Partition.Value).Select(e => string.Create(CultureInfo.InvariantCulture, $"{e.Key.Partition.Value}:{e.Value}")));
}
