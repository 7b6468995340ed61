using System.Net.Sockets;

namespace PromoStream;

/// <summary>
/// Which of this host's instances of one consumer group this process is: the lowest slot number that no running
/// process holds. A slot is held by binding a socket to a name in Linux's abstract socket namespace, which the kernel
/// releases when the process ends, however it ends, and which leaves no file behind. So a restarted instance takes its
/// slot again (a stable transactional id: the new producer aborts its predecessor's open transaction at once, instead
/// of read_committed readers waiting for the transaction timeout), and two instances on one host take different
/// slots (unique ids: neither fences the other). Containers have a namespace and a hostname each.
/// </summary>
internal sealed class InstanceSlot : IDisposable
{
    private const int MaxSlots = 256;
    private readonly Socket? _held;

    public int Number { get; }

    /// <summary>False when no slot could be held: the ids then carry the process id, unique but not stable.</summary>
    public bool Stable => _held is not null;

    private InstanceSlot(Socket? held, int number)
    {
        _held = held;
        Number = number;
    }

    /// <summary>
    /// A slot among this host's instances of the group on that cluster: one group name on two clusters is two groups,
    /// whose instances neither fence nor meet each other.
    /// </summary>
    /// <param name="scope">Keeps tests' slots apart from real instances'.</param>
    public static InstanceSlot Claim(KafkaSettings kafka, string scope = "promostream")
    {
        var groupId = kafka.GroupId;
        try
        {
            var name = ShortName($"{kafka.BootstrapServers}/{groupId}");
            for (var n = 0; n < MaxSlots; n++)
                if (TryHold($"\0{scope}/{name}/{n}") is { } held) return new InstanceSlot(held, n);
        }
        catch (SocketException e)
        {
            Log.Warn($"cannot tell this host's instances apart ({e.SocketErrorCode}); ids derived from the process id change on restart, " +
                     "and kafka.group_instance_id is not used");
            return new InstanceSlot(null, Environment.ProcessId);
        }
        Log.Warn($"all {MaxSlots} instance slots of group {groupId} on this host are taken; ids derived from the process id change on restart, " +
                 "and kafka.group_instance_id is not used");
        return new InstanceSlot(null, Environment.ProcessId);
    }

    /// <summary>A socket name has at most 107 bytes: a long name is replaced by its hash.</summary>
    private static string ShortName(string name) =>
        System.Text.Encoding.UTF8.GetByteCount(name) <= 64 ? name
            : Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(name)))[..32];

    /// <summary>The bound socket, or null when a running process holds the name.</summary>
    private static Socket? TryHold(string name)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(name));
            return socket;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            socket.Dispose();
            return null;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The ids this instance runs with. A configured transactional id is used as given ("{hostname}" replaced); an
    /// absent one becomes group-hostname-slot, as Kafka Streams builds its own from the application, the host and a
    /// process. A configured group instance id gets the slot appended from the second instance on a host, so one
    /// config file serves several instances there.
    /// </summary>
    public KafkaSettings Apply(KafkaSettings kafka) => kafka with
    {
        TransactionalId = kafka.TransactionalId.Length > 0 ? kafka.TransactionalId : $"{kafka.GroupId}-{Hostname}-{Suffix}",
        GroupInstanceId = kafka.GroupInstanceId is not { } id ? null
            : !Stable ? null // a static member id that changes on every start would only leave its partitions waiting
            : Number > 0 ? $"{id}-{Suffix}" : id,
    };

    /// <summary>
    /// The second instance on a host listens on metrics.port + 1, and so on: one config file, no port taken twice.
    /// </summary>
    public MetricsSettings Apply(MetricsSettings metrics) =>
        metrics.Port == 0 || !Stable || Number == 0 ? metrics : metrics with { Port = metrics.Port + Number };

    /// <summary>The host's full name (Environment.MachineName stops at the first dot, so app1.dc1 and app1.dc2 would meet).</summary>
    public static string Hostname { get; } = System.Net.Dns.GetHostName();

    private string Suffix => Stable ? Number.ToString() : $"pid{Number}";

    public void Dispose() => _held?.Dispose();
}
