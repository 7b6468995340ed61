using Npgsql;
using Xunit;

namespace PromoStream.Tests;

[Collection(Stack.Name)]
public class FeedbackStoreTests
{
    private static Campaign Campaign(string content = "first campaign") => new(
        "123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-426614174003", content,
        "Ivanov Ivan Ivanovich", "iiivanov@restaurant.ru", 1659203516, 2659207116, 1659131516);

    private static List<CampaignFanout> Fanouts(Campaign c, params string[] clients) =>
        [new CampaignFanout(c, clients, new NotificationTemplate(c, 1732450000), 1732450000)];

    [Fact]
    public void TheSameBatchTwiceGivesTheSameRows()
    {
        var db = PostgresServer.NewDatabase();
        using var dataSource = FeedbackStore.CreateDataSource(db);
        using var store = new FeedbackStore(dataSource);
        var batch = Fanouts(Campaign(), "c1", "c2", "c3");
        Assert.Equal(3, store.Write(batch));
        Assert.Equal(0, store.Write(batch));
        Assert.Equal(3, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback"));
        Assert.Equal(1, PostgresServer.Scalar(db, "SELECT count(DISTINCT client_id) FROM subscribers_feedback WHERE client_id = $1", "c2"));
    }

    [Fact]
    public void AnExistingFeedbackSurvivesAReplay()
    {
        var db = PostgresServer.NewDatabase();
        using var dataSource = FeedbackStore.CreateDataSource(db);
        using var store = new FeedbackStore(dataSource);
        store.Write(Fanouts(Campaign(), "c1"));
        PostgresServer.Execute(db, "UPDATE subscribers_feedback SET feedback = $1 WHERE client_id = $2", "liked it", "c1");
        store.Write(Fanouts(Campaign("changed text"), "c1"));
        Assert.Equal(1, PostgresServer.Scalar(db, "SELECT count(*) FROM subscribers_feedback WHERE feedback = $1 AND adv_campaign_content = $2", "liked it", "first campaign"));
    }

    [Fact]
    public void RowsHaveTheContractValues()
    {
        var db = PostgresServer.NewDatabase();
        using var dataSource = FeedbackStore.CreateDataSource(db);
        using var store = new FeedbackStore(dataSource);
        var tricky = Campaign("it's \"50%\" off 🍕 '; DROP TABLE subscribers_feedback; --");
        store.Write(Fanouts(tricky, "c1"));
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
        Assert.Equal(1732450000, r.GetInt32(9));
        Assert.True(r.IsDBNull(10));
    }

    [Fact]
    public void MissingSchemaSaysToRunInitDb()
    {
        var db = PostgresServer.NewDatabase(withSchema: false);
        using var dataSource = FeedbackStore.CreateDataSource(db);
        using var store = new FeedbackStore(dataSource);
        var e = Assert.Throws<SchemaException>(store.CheckSchema);
        Assert.Contains("subscribers_feedback", e.Message);
        Assert.Contains("--init-db", e.Message);
        store.ApplySchema();
        store.ApplySchema(); // idempotent
        store.CheckSchema();
    }

    [Fact]
    public void ATableWithoutTheUniqueIndexIsRefusedAndDuplicateRowsAreExplained()
    {
        var db = PostgresServer.NewDatabase(withSchema: false);
        var contractTable = FeedbackStore.SchemaSql().Split("CREATE UNIQUE INDEX")[0];
        PostgresServer.Execute(db, contractTable);
        using var dataSource = FeedbackStore.CreateDataSource(db);
        using var store = new FeedbackStore(dataSource);
        Assert.Contains("unique index", Assert.Throws<SchemaException>(store.CheckSchema).Message);
        for (var i = 0; i < 2; i++)
            PostgresServer.Execute(db, "INSERT INTO subscribers_feedback (restaurant_id, adv_campaign_id, adv_campaign_content, adv_campaign_owner, " +
                "adv_campaign_owner_contact, adv_campaign_datetime_start, adv_campaign_datetime_end, datetime_created, client_id, trigger_datetime_created) " +
                "VALUES ('r', 'c', 'x', 'o', 'e', 1, 2, 1, 'client', 1)");
        var e = Assert.Throws<SchemaException>(store.ApplySchema);
        Assert.Contains("repeat the natural key", e.Message);
    }
}

[Collection(Stack.Name)]
public class SubscriberDirectoryTests
{
    [Fact]
    public void DuplicateSubscriptionRowsGiveOneClientAndChangesShowAfterTheRefreshInterval()
    {
        var db = PostgresServer.NewDatabase();
        foreach (var client in new[] { "a", "b", "b" })
            PostgresServer.Execute(db, "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ($1, 'r1')", client);
        using var dataSource = FeedbackStore.CreateDataSource(db);
        long now = 0;
        var directory = new SubscriberDirectory(dataSource, TimeSpan.FromSeconds(30), () => now);
        directory.Prepare(["r1", "r2"]);
        Assert.Equal(["a", "b"], directory.ClientsOf("r1").Order());
        Assert.Empty(directory.ClientsOf("r2"));

        PostgresServer.Execute(db, "INSERT INTO subscribers_restaurants (client_id, restaurant_id) VALUES ('c', 'r1'), ('z', 'r2')");
        PostgresServer.Execute(db, "DELETE FROM subscribers_restaurants WHERE client_id = 'a'");
        now = 29_000;
        directory.Prepare(["r1", "r2"]);
        Assert.Equal(["a", "b"], directory.ClientsOf("r1").Order()); // cached within the interval
        now = 30_000;
        directory.Prepare(["r1", "r2"]);
        Assert.Equal(["b", "c"], directory.ClientsOf("r1").Order());
        Assert.Equal(["z"], directory.ClientsOf("r2"));
    }
}
