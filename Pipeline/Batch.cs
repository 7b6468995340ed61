using System.Diagnostics;
using System.Text;
using Confluent.Kafka;

namespace PromoStream;

internal sealed class Batch
{
    public readonly List<ConsumeResult<byte[]?, byte[]?>> Messages = [];
    public readonly Dictionary<TopicPartition, long> FirstOffsets = [];
    public readonly Dictionary<TopicPartition, long> NextOffsets = [];
    public readonly Stopwatch Clock = Stopwatch.StartNew();

    public void Add(ConsumeResult<byte[]?, byte[]?> m)
    {
        Messages.Add(m);
        Cover(m);
    }

    /// <summary>A record read but not fed (a redrive's filter): the committed position moves past it all the same.</summary>
    public void PassOver(ConsumeResult<byte[]?, byte[]?> m) => Cover(m);

    private void Cover(ConsumeResult<byte[]?, byte[]?> m)
    {
        FirstOffsets.TryAdd(m.TopicPartition, m.Offset.Value);
        NextOffsets[m.TopicPartition] = m.Offset.Value + 1;
    }

    /// <summary>Nothing fed and nothing passed over: no position to commit.</summary>
    public bool IsEmpty => NextOffsets.Count == 0;

    /// <summary>After the batches before it were given up and the consumer rewound: all of it is read again.</summary>
    public void Clear()
    {
        Messages.Clear();
        FirstOffsets.Clear();
        NextOffsets.Clear();
    }

    public void DropPartitions(IReadOnlySet<TopicPartition> partitions)
    {
        Messages.RemoveAll(m => partitions.Contains(m.TopicPartition));
        foreach (var tp in partitions)
        {
            FirstOffsets.Remove(tp);
            NextOffsets.Remove(tp);
        }
    }
}

/// <summary>A batch evaluated: what goes to the ledger, what goes to the DLQ whatever the ledger says.</summary>
internal sealed class Plan(long trigger)
{
    public readonly long Trigger = trigger;
    public readonly List<LedgerEntry> Entries = [];
    public readonly List<ConsumeResult<byte[]?, byte[]?>> EntrySources = [];
    public readonly List<DeadLetter> DeadLetters = [];
}

/// <summary>
/// The part of a batch's work that needs no decision: parse, judge activity, look up subscribers, and set aside what
/// goes to the DLQ whatever the ledger says (invalid events, notifications too big for the output topic).
/// </summary>
internal sealed class BatchEvaluator(SubscriberDirectory subscribers, string outputTopic)
{
    public SubscriberDirectory Subscribers => subscribers;

    public Plan Evaluate(Batch batch, int outputLimit)
    {
        var plan = new Plan(DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        var parsed = new List<(Campaign Campaign, ConsumeResult<byte[]?, byte[]?> Message, bool Active)>();
        var restaurants = new HashSet<string>(StringComparer.Ordinal);
        foreach (var message in batch.Messages)
        {
            if (!CampaignParser.TryParse(message.Message.Value, out var campaign, out var reason))
            {
                plan.DeadLetters.Add(new DeadLetter(message, reason));
                continue;
            }
            var active = campaign!.IsActiveAt(plan.Trigger);
            parsed.Add((campaign, message, active));
            if (active) restaurants.Add(campaign.RestaurantId);
        }
        subscribers.Prepare(restaurants);
        foreach (var (campaign, message, active) in parsed)
        {
            var clients = active ? subscribers.ClientsOf(campaign.RestaurantId) : [];
            if (LargestNotification(campaign, clients, plan.Trigger) is { } size && size > outputLimit)
            {
                plan.DeadLetters.Add(new DeadLetter(message,
                    $"its notification of {size} bytes exceeds what the output topic {outputTopic} accepts ({outputLimit} bytes per record)", Oversize: true));
                continue;
            }
            plan.Entries.Add(new LedgerEntry(campaign, new InputPosition(message.Topic, message.Partition.Value, message.Offset.Value), active, clients));
            plan.EntrySources.Add(message);
        }
        return plan;
    }

    // Record overhead and the key (the client id) come on top of the JSON value.
    private static int? LargestNotification(Campaign campaign, string[] clients, long trigger)
    {
        if (clients.Length == 0) return null;
        var longest = clients.MaxBy(c => c.Length)!;
        return new NotificationTemplate(campaign, trigger).For(longest).Length + Encoding.UTF8.GetByteCount(longest) + 1024;
    }
}
