using System.Buffers.Text;
using System.Text;
using Confluent.Kafka;

namespace PromoStream;

/// <summary>
/// The campaigns that already produced output within the dedup window. Memory is bounded by the window: entries
/// leave in the order they arrived once they are older than it. Each entry remembers the input partition that owns
/// it, so a rebalance can drop exactly the state of the partitions this instance gave away.
/// </summary>
internal sealed class DedupWindow(long windowSeconds)
{
    private readonly record struct Entry(int Partition, long SeenAt);

    private readonly Dictionary<CampaignKey, Entry> _seen = new();
    private readonly Queue<(CampaignKey Key, long SeenAt)> _byAge = new();

    public int Count => _seen.Count;

    /// <summary>True the first time a campaign is seen within the window; false for a duplicate.</summary>
    public bool TryAdd(CampaignKey key, int partition, long now)
    {
        Expire(now);
        if (_seen.TryGetValue(key, out var e) && now - e.SeenAt < windowSeconds) return false;
        Remember(key, partition, now);
        return true;
    }

    /// <summary>Takes back TryAdd for a batch that was not committed, so its replay is not mistaken for duplicates.</summary>
    public void Forget(CampaignKey key) => _seen.Remove(key);

    /// <summary>Re-learns an entry from the changelog after a restart or a rebalance.</summary>
    public void Restore(CampaignKey key, int partition, long seenAt, long now)
    {
        if (now - seenAt >= windowSeconds) return;
        if (_seen.TryGetValue(key, out var e) && e.SeenAt >= seenAt) return;
        Remember(key, partition, seenAt);
    }

    public void DropPartitions(IReadOnlySet<int> partitions)
    {
        foreach (var (key, e) in _seen)
            if (partitions.Contains(e.Partition)) _seen.Remove(key);
    }

    public void Expire(long now)
    {
        while (_byAge.TryPeek(out var head) && now - head.SeenAt >= windowSeconds)
        {
            _byAge.Dequeue();
            // A later TryAdd or Restore may have renewed the key; only its own queue entry may remove it.
            if (_seen.TryGetValue(head.Key, out var e) && e.SeenAt == head.SeenAt) _seen.Remove(head.Key);
        }
    }

    private void Remember(CampaignKey key, int partition, long seenAt)
    {
        _seen[key] = new Entry(partition, seenAt);
        _byAge.Enqueue((key, seenAt));
        if (_byAge.Count > 2 * _seen.Count + 1024) RebuildAgeQueue();
    }

    // Forget, DropPartitions and renewals leave stale queue entries behind; replays and rebalances must not let
    // them pile up for a whole window.
    private void RebuildAgeQueue()
    {
        _byAge.Clear();
        foreach (var (key, e) in _seen.OrderBy(x => x.Value.SeenAt)) _byAge.Enqueue((key, e.SeenAt));
    }

    internal int QueuedForExpiry => _byAge.Count;
}

/// <summary>
/// The dedup changelog: one record per first-seen campaign, written in the same Kafka transaction as that
/// campaign's notifications and to the same partition number as the input event, so that read_committed readers
/// see exactly the campaigns whose output was committed, and the new owner of an input partition can rebuild its
/// share of the window by reading one changelog partition.
/// </summary>
internal static class DedupChangelog
{
    public static byte[] EncodeKey(CampaignKey key) => Encoding.ASCII.GetBytes($"{key.RestaurantId:D}:{key.CampaignId:D}");

    public static byte[] EncodeValue(long seenAt) => Encoding.ASCII.GetBytes(seenAt.ToString(System.Globalization.CultureInfo.InvariantCulture));

    public static bool TryDecode(byte[]? key, byte[]? value, out CampaignKey campaign, out long seenAt)
    {
        campaign = default;
        seenAt = 0;
        if (key is not { Length: 73 } || value is null || key[36] != (byte)':') return false;
        if (!Guid.TryParseExact(Encoding.ASCII.GetString(key, 0, 36), "D", out var restaurant)) return false;
        if (!Guid.TryParseExact(Encoding.ASCII.GetString(key, 37, 36), "D", out var id)) return false;
        if (!Utf8Parser.TryParse(value, out seenAt, out var consumed) || consumed != value.Length) return false;
        campaign = new CampaignKey(restaurant, id);
        return true;
    }

    /// <summary>
    /// Reads the changelog partitions matching newly assigned input partitions to their end into the window,
    /// which skips entries older than itself. Throws if it cannot finish in time: running on with a partial window would
    /// let duplicates through.
    /// </summary>
    public static int Restore(ClientConfig client, string topic, IReadOnlyCollection<int> partitions, DedupWindow window,
        long windowSeconds, TimeSpan openTransactionGrace, TimeSpan timeout)
    {
        if (partitions.Count == 0) return 0;
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var config = new ConsumerConfig(client)
        {
            GroupId = "promostream-dedup-restore",
            EnableAutoCommit = false,
            EnablePartitionEof = true,
            IsolationLevel = IsolationLevel.ReadCommitted,
            AutoOffsetReset = AutoOffsetReset.Earliest,
        };
        using var consumer = new ConsumerBuilder<byte[], byte[]>(config).SetLogHandler((_, _) => { }).Build();
        // From the beginning: the topic is compacted and its retention is twice the window, so it stays small, and
        // a timestamp lookup is not answered alike by every broker (the embedded one says "end" to every time).
        consumer.Assign(partitions.Select(p => new TopicPartitionOffset(topic, p, Offset.Beginning)));
        var ends = partitions.ToDictionary(p => p, p => consumer.QueryWatermarkOffsets(new TopicPartition(topic, p), timeout).High.Value);
        var pending = new HashSet<int>(partitions.Where(p => ends[p] > 0));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var restored = 0;
        while (pending.Count > 0)
        {
            var left = timeout - clock.Elapsed;
            if (left <= TimeSpan.Zero)
                throw new TimeoutException($"dedup changelog {topic}: partitions {string.Join(",", pending)} not read to their end within {timeout.TotalSeconds:0}s");
            var result = consumer.Consume(left < TimeSpan.FromMilliseconds(200) ? left : TimeSpan.FromMilliseconds(200));
            if (result is null) continue;
            if (result.IsPartitionEOF)
            {
                if (IsReadToTheEnd(result.Offset.Value, ends[result.Partition.Value], clock.Elapsed, openTransactionGrace)) pending.Remove(result.Partition.Value);
                continue;
            }
            if (TryDecode(result.Message.Key, result.Message.Value, out var key, out var seenAt))
            {
                window.Restore(key, result.Partition.Value, seenAt, now);
                restored++;
            }
        }
        return restored;
    }

    /// <summary>
    /// The end a read_committed reader sees is the last stable offset: below the high watermark only while some
    /// transaction is open there. That transaction may still commit (a previous owner's), so its end is accepted only
    /// after the grace, by when the coordinator has decided it. The embedded broker also reports an early end for a
    /// moment, which the same rule rides out.
    /// </summary>
    private static bool IsReadToTheEnd(long endOfPartition, long highWatermark, TimeSpan elapsed, TimeSpan grace) =>
        endOfPartition >= highWatermark || elapsed >= grace;
}
