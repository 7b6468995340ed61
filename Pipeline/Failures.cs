using System.Diagnostics;
using Confluent.Kafka;
using Npgsql;

namespace PromoStream;

/// <summary>
/// Every failure the pipeline meets falls in exactly one of these classes, and each class has one answer. The
/// README's "Failure classes" section is this file in prose.
/// </summary>
internal enum FailureClass
{
    /// <summary>Connection lost, server shutting down, serialization failure, deadlock, out of resources, broker
    /// unreachable: hold the batch and retry with back-off; nothing is lost or skipped.</summary>
    Transient,

    /// <summary>Bad data in one event (22xxx, 23xxx, 54000; a notification bigger than the output topic allows):
    /// bisect the batch, dead-letter exactly the offending events, write the rest.</summary>
    PermanentForEvent,

    /// <summary>Wrong password, unknown database, missing grant or table, any other SQLSTATE nobody planned for: exit 1
    /// at once with a message naming the server, the database and the fix.</summary>
    PermanentForProcess,
}

/// <summary>A PostgreSQL error no retry and no dead letter can cure; the process stops (exit 1) and says how to fix it.</summary>
internal sealed class DatabaseMisconfiguredException(string message, Exception inner) : Exception(message, inner);

internal static class Failures
{
    public static FailureClass Classify(Exception e) => e switch
    {
        // Not one event's fault, though in classes that usually are: the id sequence ran out, another team added a
        // NOT NULL column, the table's primary key collides (a sequence behind after a restore).
        PostgresException { SqlState: "2200H" or "23502" } => FailureClass.PermanentForProcess,
        PostgresException { SqlState: "23505", ConstraintName: "id_pk" } => FailureClass.PermanentForProcess,
        // Someone else wrote a row of a campaign between its claim and its rows: the retry finds the row and keeps it.
        PostgresException { SqlState: "23505", ConstraintName: "subscribers_feedback_natural_key" } => FailureClass.Transient,
        PostgresException pg => ClassifySqlState(pg.SqlState),
        NpgsqlException or TimeoutException or IOException => FailureClass.Transient,
        _ => FailureClass.PermanentForProcess,
    };

    public static FailureClass ClassifySqlState(string sqlState) => sqlState switch
    {
        ['0', '8', ..] or ['5', '7', 'P', ..] or ['5', '3', ..] or "40001" or "40P01" or "55P03" or "57014" => FailureClass.Transient,
        ['2', '2', ..] or ['2', '3', ..] or "54000" => FailureClass.PermanentForEvent,
        _ => FailureClass.PermanentForProcess,
    };

    /// <summary>The message for a PermanentForProcess database error: where, what, and what to do (never a password).</summary>
    public static string DatabaseAdvice(Exception e, string where)
    {
        var code = (e as PostgresException)?.SqlState ?? "";
        var fix = code switch
        {
            ['2', '8', ..] => "check the user name and password in postgres.connection_string (or PROMOSTREAM__POSTGRES__CONNECTION_STRING)",
            "3D000" => "create the database, or correct Database= in postgres.connection_string",
            "42501" => "grant the PromoStream user SELECT on subscribers_restaurants and SELECT, INSERT on subscribers_feedback and PromoStream's own tables (see README, Configuration)",
            "42P01" => "run `dotnet run -- --init-db` against this database",
            _ => "this error cannot be retried away; fix the database, then start PromoStream again",
        };
        return $"PostgreSQL at {where} refused: {PostgresDatabase.Describe(e)}; {fix}";
    }

    /// <summary>A producer error after which this producer instance can do nothing more.</summary>
    public static bool IsFenced(KafkaException e) =>
        e.Error.Code is ErrorCode.ProducerFenced or ErrorCode.InvalidProducerEpoch or ErrorCode.Local_Fenced;

    // Besides fencing: errors no replay can cure (a partition that does not exist, missing permissions) stop the
    // instance with a message instead of replaying the same batch forever.
    public static bool IsFatal(KafkaException e) =>
        e.Error.IsFatal || IsFenced(e) || e.Error.Code is ErrorCode.TransactionalIdAuthorizationFailed
            or ErrorCode.Local_UnknownPartition or ErrorCode.TopicAuthorizationFailed or ErrorCode.GroupAuthorizationFailed
            or ErrorCode.ClusterAuthorizationFailed;

    public static string FatalMessage(KafkaException e, string transactionalId) => IsFenced(e)
        ? $"fenced: another instance took over transactional id '{transactionalId}'; this one must stop ({e.Error.Reason})"
        : $"fatal Kafka error ({e.Error.Code}): {e.Error.Reason}";
}

/// <summary>Exponential backoff with a cap; Wait returns false when stopping.</summary>
internal sealed class Backoff(int maxMs)
{
    private readonly Stopwatch _since = Stopwatch.StartNew();
    public int Attempts { get; private set; }
    public TimeSpan Elapsed => _since.Elapsed;

    public void Reset() => Attempts = 0;

    public bool Wait(CancellationToken stop)
    {
        var delay = Math.Min(maxMs, 100 * (1 << Math.Min(Attempts, 16)));
        Attempts++;
        return !stop.WaitHandle.WaitOne(delay + Random.Shared.Next(delay / 5 + 1));
    }
}
