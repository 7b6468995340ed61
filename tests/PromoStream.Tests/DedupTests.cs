using Xunit;

namespace PromoStream.Tests;

public class DedupTests
{
    private static CampaignKey Key(int n) => new(new Guid(n, 0, 0, new byte[8]), new Guid(0, (short)n, 0, new byte[8]));

    [Fact]
    public void FirstSightingPassesAndRepeatsWithinTheWindowDoNot()
    {
        var w = new DedupWindow(windowSeconds: 100);
        Assert.True(w.TryAdd(Key(1), 0, now: 1000));
        Assert.False(w.TryAdd(Key(1), 0, now: 1050));
        Assert.False(w.TryAdd(Key(1), 3, now: 1099)); // same campaign on another partition is still a duplicate
        Assert.True(w.TryAdd(Key(2), 0, now: 1099));
    }

    [Fact]
    public void EntriesLeaveOnceOlderThanTheWindowSoMemoryIsBoundedByIt()
    {
        var w = new DedupWindow(windowSeconds: 100);
        for (var i = 0; i < 1000; i++) w.TryAdd(Key(i), 0, now: 1000 + i / 10);
        Assert.Equal(1000, w.Count);
        w.Expire(now: 1150);
        Assert.True(w.Count <= 500, $"count {w.Count}");
        w.Expire(now: 1300);
        Assert.Equal(0, w.Count);
        Assert.True(w.TryAdd(Key(1), 0, now: 1300)); // expired: a new campaign again
    }

    [Fact]
    public void ForgetTakesBackAnUncommittedSighting()
    {
        var w = new DedupWindow(100);
        Assert.True(w.TryAdd(Key(1), 0, 1000));
        w.Forget(Key(1));
        Assert.True(w.TryAdd(Key(1), 0, 1001));
    }

    [Fact]
    public void ReplayedBatchesDoNotPileUpInTheExpiryQueue()
    {
        var w = new DedupWindow(86400);
        for (var round = 0; round < 50; round++)
        {
            for (var i = 0; i < 1000; i++) w.TryAdd(Key(i), 0, 1000 + round);
            for (var i = 0; i < 1000; i++) w.Forget(Key(i)); // the batch was not committed
        }
        w.TryAdd(Key(1), 0, 2000);
        Assert.Equal(1, w.Count);
        Assert.True(w.QueuedForExpiry <= 2 * w.Count + 1024 + 1000, $"queued {w.QueuedForExpiry}");
    }

    [Fact]
    public void RestoreSkipsEntriesOlderThanTheWindow()
    {
        var w = new DedupWindow(100);
        w.Restore(Key(1), 0, seenAt: 850, now: 1000);
        w.Restore(Key(2), 0, seenAt: 950, now: 1000);
        Assert.True(w.TryAdd(Key(1), 0, 1000));
        Assert.False(w.TryAdd(Key(2), 0, 1000));
    }

    [Fact]
    public void DroppingPartitionsForgetsOnlyTheirEntries()
    {
        var w = new DedupWindow(100);
        w.TryAdd(Key(1), 0, 1000);
        w.TryAdd(Key(2), 1, 1000);
        w.DropPartitions(new HashSet<int> { 1 });
        Assert.False(w.TryAdd(Key(1), 0, 1001));
        Assert.True(w.TryAdd(Key(2), 1, 1001));
    }

    [Fact]
    public void ChangelogRecordsRoundTripAndJunkIsRejected()
    {
        var key = new CampaignKey(Guid.NewGuid(), Guid.NewGuid());
        Assert.True(DedupChangelog.TryDecode(DedupChangelog.EncodeKey(key), DedupChangelog.EncodeValue(1732450000), out var back, out var seenAt));
        Assert.Equal(key, back);
        Assert.Equal(1732450000, seenAt);
        Assert.False(DedupChangelog.TryDecode(Text.Utf8("junk"), Text.Utf8("1"), out _, out _));
        Assert.False(DedupChangelog.TryDecode(DedupChangelog.EncodeKey(key), Text.Utf8("12x"), out _, out _));
    }
}
