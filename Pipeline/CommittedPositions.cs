using Confluent.Kafka;

namespace PromoStream;

/// <summary>The input positions this instance's Kafka commits reached, and which of them PostgreSQL has yet to record.</summary>
internal sealed class CommittedPositions
{
    private readonly object _gate = new();
    private readonly Dictionary<TopicPartition, long> _next = [];
    private bool _moved;

    public void Add(IReadOnlyDictionary<TopicPartition, long> next)
    {
        lock (_gate)
            foreach (var (tp, offset) in next)
            {
                _next[tp] = offset;
                _moved = true;
            }
    }

    /// <summary>For the next ledger write, which records them in its transaction: all positions, once any moved.</summary>
    public List<InputPosition> Unrecorded()
    {
        lock (_gate)
        {
            if (!_moved) return [];
            _moved = false;
            return AllLocked();
        }
    }

    public List<InputPosition> All()
    {
        lock (_gate) return AllLocked();
    }

    private List<InputPosition> AllLocked() => _next.Select(p => new InputPosition(p.Key.Topic, p.Key.Partition.Value, p.Value)).ToList();

    public Dictionary<int, long> ByPartition(string topic)
    {
        lock (_gate) return _next.Where(p => p.Key.Topic == topic).ToDictionary(p => p.Key.Partition.Value, p => p.Value);
    }
}
