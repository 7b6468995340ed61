using Npgsql;

namespace PromoStream;

/// <summary>
/// Who is subscribed to which restaurant, read on demand and cached per restaurant for the refresh interval, so
/// rows added or removed by the owning team are seen within that interval while a busy restaurant costs one query
/// per interval, not one per event. Duplicate subscription rows collapse to one client.
/// </summary>
internal sealed class SubscriberDirectory(NpgsqlDataSource dataSource, TimeSpan refresh, Func<long>? clock = null)
{
    private readonly record struct Entry(string[] Clients, long LoadedAtMs);

    private readonly Dictionary<string, Entry> _byRestaurant = new(StringComparer.Ordinal);
    private readonly Func<long> _clock = clock ?? (() => Environment.TickCount64);
    private long _lastPruneMs;

    private volatile int _cachedRestaurants;
    private double _oldestUsedAgeSeconds;

    /// <summary>Read by the metrics from another thread, hence a copy rather than the dictionary's own count.</summary>
    public int CachedRestaurants => _cachedRestaurants;

    /// <summary>How old the oldest list the latest batch used was when used: at most the refresh interval.</summary>
    public double OldestUsedAgeSeconds => Volatile.Read(ref _oldestUsedAgeSeconds);

    /// <summary>Loads, in one query, every restaurant of the batch whose cached list is missing or stale.</summary>
    public void Prepare(IReadOnlyCollection<string> restaurantIds)
    {
        var now = _clock();
        var stale = new List<string>();
        var oldest = now;
        foreach (var id in restaurantIds)
        {
            if (!_byRestaurant.TryGetValue(id, out var e) || IsStale(e, now)) stale.Add(id);
            else oldest = Math.Min(oldest, e.LoadedAtMs);
        }
        if (stale.Count > 0) Load(stale, now);
        PruneOccasionally(now);
        _cachedRestaurants = _byRestaurant.Count;
        if (restaurantIds.Count > 0) Volatile.Write(ref _oldestUsedAgeSeconds, (now - oldest) / 1000.0);
    }

    /// <summary>The distinct clients of a restaurant; call Prepare for the batch first.</summary>
    public string[] ClientsOf(string restaurantId) =>
        _byRestaurant.TryGetValue(restaurantId, out var e) ? e.Clients : [];

    private bool IsStale(Entry e, long now) => now - e.LoadedAtMs >= (long)refresh.TotalMilliseconds;

    private void Load(List<string> restaurantIds, long now)
    {
        var found = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        using (var command = dataSource.CreateCommand(
                   "SELECT restaurant_id, client_id FROM public.subscribers_restaurants WHERE restaurant_id = ANY($1)"))
        {
            command.Parameters.Add(new NpgsqlParameter { Value = restaurantIds.ToArray() });
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                var restaurant = reader.GetString(0);
                if (!found.TryGetValue(restaurant, out var clients)) found[restaurant] = clients = new(StringComparer.Ordinal);
                clients.Add(reader.GetString(1));
            }
        }
        foreach (var id in restaurantIds)
            // In ordinal order: the ledger writes a campaign's rows in the order of the natural key.
            _byRestaurant[id] = new Entry(found.TryGetValue(id, out var clients) ? [.. clients.Order(StringComparer.Ordinal)] : [], now);
    }

    // Keeps memory bounded by the restaurants seen within a few refresh intervals, not by all ever seen.
    private void PruneOccasionally(long now)
    {
        var horizon = Math.Max(4 * (long)refresh.TotalMilliseconds, 60_000);
        if (now - _lastPruneMs < horizon) return;
        _lastPruneMs = now;
        foreach (var (id, e) in _byRestaurant)
            if (now - e.LoadedAtMs >= horizon) _byRestaurant.Remove(id);
    }
}
