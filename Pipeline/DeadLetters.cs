using System.Globalization;
using System.Text;
using Confluent.Kafka;

namespace PromoStream;

/// <summary>
/// An input event the pipeline will not notify: its original record, and why (a SQLSTATE when the database said so;
/// Oversize when its notification would not fit the output topic).
/// </summary>
internal sealed record DeadLetter(ConsumeResult<byte[]?, byte[]?> Source, string Reason, string? SqlState = null, bool Oversize = false)
{
    /// <summary>The reason label of promostream_events_total{outcome="dead_lettered"}: few values, unlike Reason.</summary>
    public string MetricReason => SqlState is { } code ? $"sqlstate_{code}" : Oversize ? "oversize" : "invalid";
}

/// <summary>
/// Dead letters as DLQ records: the original key, bytes and headers, plus headers saying why and where from. A record
/// too big for the DLQ topic is stored cut to fit, with headers giving the original size and the cut, so that it is
/// never an endless abort.
/// </summary>
internal static class DeadLetters
{
    // Record batch header and per-record varints; generous, since being a few bytes short means an endless abort.
    private const int RecordOverhead = 1024;

    public static Message<byte[], byte[]> ToRecord(DeadLetter letter, int topicLimit)
    {
        var source = letter.Source;
        var headers = new Headers();
        if (source.Message.Headers is { } original)
            foreach (var h in original) headers.Add(h.Key, h.GetValueBytes());
        headers.Add("dlq.reason", Encoding.UTF8.GetBytes(letter.Reason));
        if (letter.SqlState is { } sqlState) headers.Add("dlq.sqlstate", Encoding.ASCII.GetBytes(sqlState));
        headers.Add("dlq.source.topic", Encoding.UTF8.GetBytes(source.Topic));
        headers.Add("dlq.source.partition", Ascii(source.Partition.Value));
        headers.Add("dlq.source.offset", Ascii(source.Offset.Value));
        // A null key or value (a tombstone) stays null: the DLQ record is the original, not a re-encoding of it.
        var key = source.Message.Key;
        var value = source.Message.Value;
        var room = topicLimit - RecordOverhead - (key?.Length ?? 0) - HeadersSize(headers) - 256; // 256: the cut headers below
        if (value is not null && value.Length > room)
        {
            var kept = Math.Max(0, room);
            headers.Add("dlq.original.size", Ascii(value.Length));
            headers.Add("dlq.cut.size", Ascii(kept));
            headers.Add("dlq.cut.reason", Encoding.UTF8.GetBytes($"the event's {value.Length} bytes exceed what the DLQ topic accepts ({topicLimit} bytes per record); the first {kept} bytes are kept"));
            value = value[..kept];
        }
        return new Message<byte[], byte[]> { Key = key!, Value = value!, Headers = headers };
    }

    private static int HeadersSize(Headers headers) => headers.Sum(h => h.Key.Length + (h.GetValueBytes()?.Length ?? 0) + 10);

    private static byte[] Ascii(long n) => Encoding.ASCII.GetBytes(n.ToString(CultureInfo.InvariantCulture));
}
