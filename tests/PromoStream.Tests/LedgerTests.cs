using Npgsql;
using Xunit;

namespace PromoStream.Tests;

/// <summary>The ledger alone, against a real PostgreSQL: what it decides, and what it writes.</summary>
[Collection(Stack.Name)]
public class LedgerTests
{
    private const string Restaurant = "123e4567-e89b-12d3-a456-426614174000";
    private const long Trigger = 1732450000;

    internal static Campaign Campaign(string content = "first campaign", string campaignId = "123e4567-e89b-12d3-a456-426614174003") => new(
        Restaurant, campaignId, content, "Ivanov Ivan Ivanovich", "iiivanov@restaurant.ru", 1659203516, 2659207116, 1659131516);

    private static string CampaignId(int i) => $"123e4567-e89b-12d3-a456-{i:D12}";

    private static LedgerEntry Entry(Campaign c, long offset, params string[] clients) =>
        new(c, new InputPosition("campaigns", 0, offset), Active: true, clients);

    private static (CampaignLedger Ledger, NpgsqlDataSource DataSource, string Db) NewLedger()
    {
        var db = PostgresServer.NewDatabase();
        var dataSource = PostgresDatabase.CreateDataSource(db);
        return (new CampaignLedger(dataSource, "test", "group", 100), dataSource, db);
    }

    private static Decision[] Record(CampaignLedger ledger, long trigger, params LedgerEntry[] entries) =>
        ledger.Record(entries, trigger, [], CancellationToken.None)!;

    [Fact]
    public void AFirstSightingIsNotifiedItsReplayResendsTheStoredRowsAndACopyElsewhereIsADuplicate()
    {
        var (ledger, dataSource, db) = NewLedger();
        using (ledger) using (dataSource)
        {
            var first = Record(ledger, Trigger, Entry(Campaign(), 5, "c1", "c2", "c3"));
            Assert.Equal(Verdict.Notified, first[0].Verdict);
            Assert.Equal(["c1", "c2", "c3"], first[0].Clients.Order());
            Assert.Equal(Trigger, first[0].Trigger);

            // Read again after a Kafka transaction that never committed: later, with a subscriber more.
            var replay = Record(ledger, Trigger + 60, Entry(Campaign(), 5, "c1", "c2", "c3", "c4"));
            Assert.Equal(Verdict.Replayed, replay[0].Verdict);
            Assert.Equal(["c1", "c2", "c3"], replay[0].Clients.Order());
            Assert.Equal(Trigger, replay[0].Trigger);

            var copy = Record(ledger, Trigger + 60, Entry(Campaign(), 6, "c1", "c2", "c3", "c4"));
            Assert.Equal(Verdict.Duplicate, copy[0].Verdict);
            Assert.Equal(3, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback"));
            Assert.Equal(1, PostgresServer.Scalar(db, "SELECT count(*) FROM promostream_ledger WHERE input_offset = 5 AND trigger_datetime_created = $1", (int)Trigger));
        }
    }

    [Fact]
    public void APositionKafkaHasCommittedOrAnotherGroupReadingItIsADuplicateNotAReplay()
    {
        var (ledger, dataSource, db) = NewLedger();
        using (ledger) using (dataSource)
        {
            Record(ledger, Trigger, Entry(Campaign(), 5, "c1"));
            using var otherGroup = new CampaignLedger(dataSource, "test", "another-group", 100);
            Assert.Equal(Verdict.Duplicate, Record(otherGroup, Trigger, Entry(Campaign(), 5, "c1"))[0].Verdict);
            // Kafka committed past offset 5 (recorded after that commit): reading it again is not a replay.
            ledger.RecordPositions([new InputPosition("campaigns", 0, 6)], CancellationToken.None);
            Assert.Equal(Verdict.Duplicate, Record(ledger, Trigger, Entry(Campaign(), 5, "c1"))[0].Verdict);
            Assert.Equal(1, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback"));
        }
    }

    [Fact]
    public void ACopyWithALaterEndKeepsTheCampaignInTheLedgerUntilThen()
    {
        var (ledger, dataSource, db) = NewLedger();
        using (ledger) using (dataSource)
        {
            Record(ledger, Trigger, Entry(Campaign(), 1, "c1"));
            Record(ledger, Trigger, Entry(Campaign() with { DatetimeEnd = 2759207116 }, 2, "c1"));
            Assert.Equal(2759207116, PostgresServer.Scalar(db, "SELECT adv_campaign_datetime_end FROM promostream_ledger"));
        }
    }

    [Fact]
    public void WithinABatchTheFirstActiveSightingClaimsAndAReplayInAnotherOrderStillFindsIt()
    {
        var (ledger, dataSource, _) = NewLedger();
        using (ledger) using (dataSource)
        {
            var inactive = Entry(Campaign(), 1, "c1") with { Active = false };
            var decided = Record(ledger, Trigger, inactive, Entry(Campaign(), 2, "c1"), Entry(Campaign(), 3, "c1"));
            Assert.Equal([Verdict.Inactive, Verdict.Notified, Verdict.Duplicate], decided.Select(d => d.Verdict));

            // A replayed batch may interleave partitions differently: the ledger, not the order, says which one is held.
            var replay = Record(ledger, Trigger + 1, Entry(Campaign(), 3, "c1"), Entry(Campaign(), 2, "c1"));
            Assert.Equal([Verdict.Duplicate, Verdict.Replayed], replay.Select(d => d.Verdict));

            // The campaign ended in between: the event held at its position is still replayed, not dropped.
            var ended = Record(ledger, Trigger + 2, Entry(Campaign(), 2, "c1") with { Active = false });
            Assert.Equal(Verdict.Replayed, ended[0].Verdict);
        }
    }

    [Fact]
    public void TheOutputIsExactlyTheRowsInsertedAndAnExistingFeedbackSurvives()
    {
        var (ledger, dataSource, db) = NewLedger();
        using (ledger) using (dataSource)
        {
            // A row written before PromoStream (by the old job), with feedback already given.
            PostgresServer.Execute(db, "INSERT INTO subscribers_feedback (restaurant_id, adv_campaign_id, adv_campaign_content, adv_campaign_owner, " +
                "adv_campaign_owner_contact, adv_campaign_datetime_start, adv_campaign_datetime_end, datetime_created, client_id, trigger_datetime_created, feedback) " +
                "VALUES ($1, $2, 'old text', 'o', 'e', 1, 2659207116, 1, 'c1', 1, 'liked it')", Restaurant, Campaign().AdvCampaignId);
            var decided = Record(ledger, Trigger, Entry(Campaign(), 1, "c1", "c2"));
            Assert.Equal(Verdict.Notified, decided[0].Verdict);
            Assert.Equal(["c2"], decided[0].Clients);
            Assert.Equal(1, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback WHERE feedback = 'liked it' AND adv_campaign_content = 'old text'"));

            var replay = Record(ledger, Trigger + 5, Entry(Campaign(), 1, "c1", "c2"));
            Assert.Equal(["c2"], replay[0].Clients);
        }
    }

    [Fact]
    public void ACampaignWithoutSubscribersIsStillHeldSoALaterCopyIsADuplicate()
    {
        var (ledger, dataSource, _) = NewLedger();
        using (ledger) using (dataSource)
        {
            Assert.Equal(Verdict.Notified, Record(ledger, Trigger, Entry(Campaign(), 1))[0].Verdict);
            Assert.Equal(Verdict.Duplicate, Record(ledger, Trigger, Entry(Campaign(), 2, "c1"))[0].Verdict);
        }
    }

    [Fact]
    public void RowsHaveTheContractValues()
    {
        var (ledger, dataSource, db) = NewLedger();
        using (ledger) using (dataSource)
        {
            var tricky = Campaign("it's \"50%\" off 🍕 '; DROP TABLE subscribers_feedback; --");
            Record(ledger, Trigger, Entry(tricky, 1, "c1"));
            using var connection = new NpgsqlConnection(db);
            connection.Open();
            using var command = new NpgsqlCommand("SELECT restaurant_id, adv_campaign_id, adv_campaign_content, adv_campaign_owner, adv_campaign_owner_contact, " +
                "adv_campaign_datetime_start, adv_campaign_datetime_end, datetime_created, client_id, trigger_datetime_created, feedback FROM subscribers_feedback", connection);
            using var r = command.ExecuteReader();
            Assert.True(r.Read());
            Assert.Equal(tricky.RestaurantId, r.GetString(0));
            Assert.Equal(tricky.AdvCampaignId, r.GetString(1));
            Assert.Equal(tricky.Content, r.GetString(2));
            Assert.Equal(tricky.Owner, r.GetString(3));
            Assert.Equal(tricky.OwnerContact, r.GetString(4));
            Assert.Equal(1659203516L, r.GetInt64(5));
            Assert.Equal(2659207116L, r.GetInt64(6));
            Assert.Equal(1659131516L, r.GetInt64(7));
            Assert.Equal("c1", r.GetString(8));
            Assert.Equal((int)Trigger, r.GetInt32(9));
            Assert.True(r.IsDBNull(10));
        }
    }

    [Fact]
    public void ACheckConstraintThatRejectsOneOfAHundredEventsRejectsExactlyThatOne()
    {
        var (ledger, dataSource, db) = NewLedger();
        using (ledger) using (dataSource)
        {
            PostgresServer.Execute(db, "ALTER TABLE subscribers_feedback ADD CONSTRAINT no_forbidden CHECK (adv_campaign_content <> 'forbidden')");
            var entries = Enumerable.Range(0, 100)
                .Select(i => Entry(Campaign(i == 37 ? "forbidden" : $"offer {i}", CampaignId(i)), i, "c1", "c2")).ToArray();
            var decided = ledger.Record(entries, Trigger, [new InputPosition("campaigns", 0, 100)], CancellationToken.None)!;
            Assert.Equal(99, decided.Count(d => d.Verdict == Verdict.Notified));
            var rejected = Assert.Single(decided, d => d.Verdict == Verdict.Rejected);
            Assert.Same(rejected, decided[37]);
            Assert.Equal("23514", rejected.SqlState);
            Assert.Equal(198, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback"));
            Assert.Equal(99, PostgresServer.Scalar(db, "SELECT count(*) FROM promostream_ledger"));
            Assert.Equal(100, ledger.RecordedPositions("campaigns")[0]);
        }
    }

    [Fact]
    public void RecordedPositionsOnlyMoveForward()
    {
        var (ledger, dataSource, _) = NewLedger();
        using (ledger) using (dataSource)
        {
            ledger.RecordPositions([new InputPosition("campaigns", 0, 50), new InputPosition("campaigns", 1, 7)], CancellationToken.None);
            ledger.RecordPositions([new InputPosition("campaigns", 0, 40)], CancellationToken.None);
            Assert.Equal(new Dictionary<int, long> { [0] = 50, [1] = 7 }, ledger.RecordedPositions("campaigns"));
            Assert.Empty(ledger.RecordedPositions("other"));
        }
    }

    [Fact]
    public void AMissingGrantIsPermanentForTheProcessAndSaysWhatToDo()
    {
        var (ledger, dataSource, db) = NewLedger();
        using (ledger) using (dataSource)
        {
            PostgresServer.Execute(db, "CREATE ROLE limited LOGIN");
            PostgresServer.Execute(db, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO limited");
            var limited = new NpgsqlConnectionStringBuilder(db) { Username = "limited" }.ConnectionString;
            using var limitedSource = PostgresDatabase.CreateDataSource(limited);
            using var limitedLedger = new CampaignLedger(limitedSource, "somewhere", "group", 100);
            var e = Assert.Throws<DatabaseMisconfiguredException>(() => Record(limitedLedger, Trigger, Entry(Campaign(), 1, "c1")));
            Assert.Contains("42501", e.Message);
            Assert.Contains("grant", e.Message);
            Assert.Contains("somewhere", e.Message);
        }
    }

    [Theory]
    [InlineData("08006", "Transient")]
    [InlineData("57P01", "Transient")]
    [InlineData("40001", "Transient")]
    [InlineData("40P01", "Transient")]
    [InlineData("53300", "Transient")]
    [InlineData("22P05", "PermanentForEvent")]
    [InlineData("23514", "PermanentForEvent")]
    [InlineData("54000", "PermanentForEvent")]
    [InlineData("28P01", "PermanentForProcess")]
    [InlineData("3D000", "PermanentForProcess")]
    [InlineData("42501", "PermanentForProcess")]
    [InlineData("42P01", "PermanentForProcess")]
    public void EverySqlStateHasOneClass(string sqlState, string expected) =>
        Assert.Equal(Enum.Parse<FailureClass>(expected), Failures.ClassifySqlState(sqlState));

    [Theory]
    [InlineData("subscribers_feedback_natural_key", "Transient")]  // another writer's row between claim and insert
    [InlineData("id_pk", "PermanentForProcess")]                   // the id sequence is behind the table
    [InlineData("some_other_team_unique", "PermanentForEvent")]
    public void AUniqueViolationIsClassedByItsConstraint(string constraint, string expected) =>
        Assert.Equal(Enum.Parse<FailureClass>(expected), Failures.Classify(
            new PostgresException("duplicate key", "ERROR", "ERROR", "23505", tableName: "subscribers_feedback", constraintName: constraint)));
}
