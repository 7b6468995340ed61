using System.Runtime.InteropServices;
using PromoStream;

// The log format comes first, before any line: from the environment, as the config file is not read yet. A bad value
// is reported in the text format, the only one known then.
try
{
    Log.Use(Settings.LogFormatFromEnvironment());
}
catch (ConfigException e)
{
    Log.Error($"configuration: {e.Message}");
    return 2;
}

CommandLine cli;
try
{
    cli = CommandLine.Parse(args);
}
catch (UsageException e)
{
    ReportUsageError(e);
    return 2;
}
if (cli.Mode == Mode.Help)
{
    Console.WriteLine(CommandLine.Help);
    return 0;
}

// Ctrl+C and SIGTERM ask for a clean stop: the current batch is committed or aborted, the consumer leaves its group.
using var stopping = new CancellationTokenSource();
using var onInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, RequestStop);
using var onTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, RequestStop);
var stop = stopping.Token;

try
{
    return cli.Mode switch
    {
        Mode.Process => RunProcessor(),
        Mode.InitDb => InitDatabase(),
        Mode.Produce => Simulator.Run(LoadSettings(), SimulatorOptions.From(cli), stop),
        Mode.Broker => RunBroker(),
        Mode.Demo => Demo.Run(cli, stop),
        Mode.Dev => Dev.Run(cli, stop),
        Mode.Bench => Bench.Run(cli, stop),
        Mode.RedriveDlq => Redrive.Run(cli, LoadSettings(), stop),
        _ => 2,
    };
}
catch (UsageException e)
{
    ReportUsageError(e);
    return 2;
}
catch (ConfigException e)
{
    Log.Error($"configuration: {e.Message}", ("exit_code", 2));
    return 2;
}
catch (Exception e) when (e is SchemaException or ServiceUnreachableException or DatabaseMisconfiguredException)
{
    Log.Error(e.Message, ("exit_code", 1));
    return 1;
}
catch (FatalKafkaException e)
{
    Log.Error(e.Message, ("exit_code", 3));
    return 3;
}
catch (Exception e)
{
    Log.Error($"{e.GetType().Name}: {e.Message}", ("exit_code", 1));
    return 1;
}

// A person at a terminal gets the short usage line; a log collector, a JSON line like every other.
static void ReportUsageError(UsageException e)
{
    if (Log.Format == LogFormat.Json) Log.Error($"usage: {e.Message}; {CommandLine.UsageHint}", ("exit_code", 2));
    else Console.Error.WriteLine($"error: {e.Message}; {CommandLine.UsageHint}");
}

/// <summary>The config file's logging.format applies from here on; lines logged while reading it used the environment's.</summary>
Settings LoadSettings()
{
    var settings = Settings.Load(cli.ConfigPath);
    Log.Use(settings.LogFormat);
    return settings;
}

void RequestStop(PosixSignalContext context)
{
    context.Cancel = true;
    if (stopping.IsCancellationRequested) return;
    Log.Info($"{context.Signal} received; stopping", ("signal", context.Signal.ToString()));
    stopping.Cancel();
    // A stop must not wait on a dead broker or database. Leaving is safe at any point: an open Kafka transaction is
    // aborted by the broker or by the successor's InitTransactions, and the ledger makes a replay harmless.
    _ = Task.Delay(TimeSpan.FromSeconds(9)).ContinueWith(_ =>
    {
        Log.Warn("still stopping after 9 s (a service does not answer); exiting now, the batch in flight will be replayed");
        Environment.Exit(0);
    });
}

int RunProcessor()
{
    int? idle = cli.Has("--stop-when-idle") ? cli.Int("--stop-when-idle", 0, 1, 86400) : null;
    var settings = LoadSettings();
    var stats = Processor.Run(settings, idle, stop);
    Console.WriteLine(stats.FinalLine());
    return 0;
}

int InitDatabase()
{
    var settings = LoadSettings();
    using var dataSource = PostgresDatabase.CreateDataSource(settings.Postgres.ConnectionString);
    PostgresDatabase.WaitUntilReachable(dataSource, settings.Postgres.Describe(), TimeSpan.FromSeconds(settings.Postgres.ConnectTimeoutSeconds), stop);
    using var store = new PostgresDatabase(dataSource);
    store.ApplySchema();
    store.CheckSchema();
    Log.Info($"schema applied to {settings.Postgres.Describe()}");
    return 0;
}

int RunBroker()
{
    var requested = cli.Int("--partitions", 0, 1, 10_000);
    using var kafka = EmbeddedKafka.Start();
    // The embedded broker cannot create topics on request: make the config's (or the default) ones now.
    var k = cli.Has("--config") ? LoadSettings().Kafka : Settings.FromValues(Dev.DefaultKeys(kafka.BootstrapServers, "Host=unused")).Kafka;
    var partitions = requested > 0 ? requested : k.TopicPartitions;
    foreach (var topic in new[] { k.InputTopic, k.OutputTopic, k.DlqTopic }) kafka.CreateTopic(topic, partitions);
    Log.Info($"created topics {k.InputTopic}, {k.OutputTopic}, {k.DlqTopic} with {partitions} partitions");
    if (cli.String("--broker-file") is { } file) File.WriteAllText(file, kafka.BootstrapServers + "\n");
    Console.WriteLine($"bootstrap: {kafka.BootstrapServers}");
    Log.Info("embedded Kafka running; Ctrl+C to stop (its data dies with this process)");
    stop.WaitHandle.WaitOne();
    return 0;
}
