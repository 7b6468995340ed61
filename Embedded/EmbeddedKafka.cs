using System.Runtime.InteropServices;
using System.Text;

namespace PromoStream;

/// <summary>
/// An in-process Kafka cluster: librdkafka's mock cluster, reached through the native library that ships with
/// Confluent.Kafka. It speaks the Kafka protocol on localhost ports, so ordinary clients connect to
/// <see cref="BootstrapServers"/>.
/// </summary>
/// <remarks>
/// Limits of the mock (librdkafka 2.16): it does not implement CreateTopics (first use auto-creates 4 partitions,
/// hence <see cref="CreateTopic"/>), offsets sent with SendOffsetsToTransaction are not stored, aborted
/// transactions are not hidden from read_committed consumers, and group rebalances only settle with short
/// session timeouts (session.timeout.ms about 6000).
/// </remarks>
internal sealed unsafe class EmbeddedKafka : IDisposable
{
    private const int ProducerType = 0; // RD_KAFKA_PRODUCER
    private const int ErrorTextSize = 512;

    private nint _handle;
    private nint _cluster;

    public string BootstrapServers { get; }

    /// <summary>The settings every PromoStream client of this broker needs, whatever its topics.</summary>
    public static IReadOnlyDictionary<string, string> ClientKeys { get; } = new Dictionary<string, string>
    {
        ["kafka.create_topics"] = "false",     // it cannot create topics on request
        ["kafka.session_timeout_ms"] = "6000", // its rebalances settle only with short sessions
        // It answers a fetch with no new input only when the fetch's wait is over, even when input arrives meanwhile
        // ("we should cut the wait short ... too much of a hassle"): here the wait is latency. Measured in the bench's
        // latency phase: p50 66 -> 56 ms, p99 105 -> 84 ms going from 50 to 10 ms.
        ["kafka.fetch_wait_max_ms"] = "10",
    };

    private EmbeddedKafka(nint handle, nint cluster, string bootstrapServers)
    {
        _handle = handle;
        _cluster = cluster;
        BootstrapServers = bootstrapServers;
    }

    public static EmbeddedKafka Start(int brokers = 1)
    {
        if (brokers < 1) throw new ArgumentOutOfRangeException(nameof(brokers), brokers, "a cluster needs at least one broker");
        // The mock cluster needs a client handle for its own bookkeeping; a bare producer is the cheapest one.
        var handle = NewProducerHandle();
        var cluster = ((delegate* unmanaged<nint, int, nint>)Export("rd_kafka_mock_cluster_new"))(handle, brokers);
        if (cluster == 0)
        {
            DestroyHandle(handle);
            throw new InvalidOperationException($"librdkafka could not create a mock cluster with {brokers} broker(s)");
        }
        // Kafka's group.initial.rebalance.delay.ms (3 s in the mock as in Kafka) only waits for more members of a
        // new group; a single-machine broker has none to wait for, so a new group's first join is served at once.
        ((delegate* unmanaged<nint, int, void>)Export("rd_kafka_mock_group_initial_rebalance_delay_ms"))(cluster, 0);
        // Without a controller, admin requests that go to it (DescribeConfigs of a topic) wait for their timeout.
        ((delegate* unmanaged<nint, int, int>)Export("rd_kafka_mock_set_controller_id"))(cluster, 1);
        var bootstraps = ((delegate* unmanaged<nint, nint>)Export("rd_kafka_mock_cluster_bootstraps"))(cluster);
        return new EmbeddedKafka(handle, cluster, Marshal.PtrToStringUTF8(bootstraps) ?? "");
    }

    /// <summary>Creates a topic with an exact partition count, which clients cannot ask the mock to do.</summary>
    public void CreateTopic(string name, int partitions)
    {
        // The mock accepts a partition count of zero without complaint, which is never what a caller meant.
        if (partitions < 1) throw new ArgumentOutOfRangeException(nameof(partitions), partitions, $"topic {name} needs at least one partition");
        var create = (delegate* unmanaged<nint, byte*, int, int, int>)Export("rd_kafka_mock_topic_create");
        fixed (byte* topic = NullTerminated(name))
            ThrowOnError(create(LiveCluster(), topic, partitions, 1), $"creating topic {name} with {partitions} partition(s)");
    }

    /// <summary>Drops the broker's connections and refuses new ones until <see cref="SetBrokerUp"/>; ids start at 1.</summary>
    public void SetBrokerDown(int brokerId) =>
        ThrowOnError(((delegate* unmanaged<nint, int, int>)Export("rd_kafka_mock_broker_set_down"))(LiveCluster(), brokerId),
            $"taking broker {brokerId} down");

    public void SetBrokerUp(int brokerId) =>
        ThrowOnError(((delegate* unmanaged<nint, int, int>)Export("rd_kafka_mock_broker_set_up"))(LiveCluster(), brokerId),
            $"bringing broker {brokerId} up");

    public void Dispose()
    {
        // The cluster refers to the handle, so it goes first.
        var cluster = Interlocked.Exchange(ref _cluster, 0);
        if (cluster != 0) ((delegate* unmanaged<nint, void>)Export("rd_kafka_mock_cluster_destroy"))(cluster);
        var handle = Interlocked.Exchange(ref _handle, 0);
        if (handle != 0) DestroyHandle(handle);
    }

    private nint LiveCluster()
    {
        var cluster = _cluster;
        ObjectDisposedException.ThrowIf(cluster == 0, this);
        return cluster;
    }

    private static nint NewProducerHandle()
    {
        var conf = ((delegate* unmanaged<nint>)Export("rd_kafka_conf_new"))();
        var errorText = stackalloc byte[ErrorTextSize];
        // This handle never connects anywhere, so its notice "No `bootstrap.servers` configured" is only noise.
        SetConfig(conf, "log_level", "4", errorText);
        var handle = ((delegate* unmanaged<int, nint, byte*, nuint, nint>)Export("rd_kafka_new"))(ProducerType, conf, errorText, ErrorTextSize);
        if (handle != 0) return handle;
        // rd_kafka_new takes ownership of the configuration only when it succeeds.
        ((delegate* unmanaged<nint, void>)Export("rd_kafka_conf_destroy"))(conf);
        throw new InvalidOperationException($"librdkafka could not create the mock cluster's client handle: {Marshal.PtrToStringUTF8((nint)errorText)}");
    }

    private static void SetConfig(nint conf, string name, string value, byte* errorText)
    {
        var set = (delegate* unmanaged<nint, byte*, byte*, byte*, nuint, int>)Export("rd_kafka_conf_set");
        fixed (byte* n = NullTerminated(name), v = NullTerminated(value))
            if (set(conf, n, v, errorText, ErrorTextSize) != 0) // RD_KAFKA_CONF_OK is 0
                throw new InvalidOperationException($"librdkafka rejected {name}={value}: {Marshal.PtrToStringUTF8((nint)errorText)}");
    }

    private static void DestroyHandle(nint handle) => ((delegate* unmanaged<nint, void>)Export("rd_kafka_destroy"))(handle);

    private static void ThrowOnError(int error, string action)
    {
        if (error == 0) return;
        var text = Marshal.PtrToStringUTF8(((delegate* unmanaged<int, nint>)Export("rd_kafka_err2str"))(error));
        throw new InvalidOperationException($"embedded Kafka: {action} failed: {text} (error {error})");
    }

    private static byte[] NullTerminated(string value) => Encoding.UTF8.GetBytes(value + "\0");

    private static nint Export(string name) => NativeLibrary.GetExport(Library.Value, name);

    // The same file Confluent.Kafka loads on glibc systems: the plain librdkafka.so needs libsasl2.so.3, which
    // Debian does not have. dlopen hands back the already-loaded copy, so both share one librdkafka.
    private static readonly Lazy<nint> Library = new(() =>
    {
        var path = LibraryPlaces().FirstOrDefault(File.Exists)
            ?? throw new DllNotFoundException($"librdkafka for the embedded Kafka cluster not found at {string.Join(" or ", LibraryPlaces())}");
        return NativeLibrary.Load(path);
    });

    /// <summary>
    /// Where the build puts it (`dotnet run`, `dotnet build`: under runtimes/, for any platform), and where a publish
    /// for linux-x64 does (beside the executable, single file or not).
    /// </summary>
    private static IEnumerable<string> LibraryPlaces() =>
    [
        Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "centos8-librdkafka.so"),
        Path.Combine(AppContext.BaseDirectory, "centos8-librdkafka.so"),
    ];
}
