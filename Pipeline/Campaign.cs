using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace PromoStream;

/// <summary>Identity of a campaign for deduplication: the two ids as numbers, so a key is 32 bytes and not two strings.</summary>
internal readonly record struct CampaignKey(Guid RestaurantId, Guid CampaignId);

/// <summary>
/// One promotion campaign as the contract (section 1) defines it. Texts keep their exact decoded value; times are Unix
/// seconds (UTC). Constructing one with an id that is not canonical UUID text throws, so Key is always meaningful.
/// </summary>
internal sealed record Campaign(string RestaurantId, string AdvCampaignId, string Content, string Owner, string OwnerContact,
                                long DatetimeStart, long DatetimeEnd, long DatetimeCreated)
{
    // The ids are re-parsed by their init accessors too, so a `with` expression that replaces one cannot leave Key stale.
    public string RestaurantId
    {
        get;
        init { field = value; Key = Key with { RestaurantId = ParseId(value, nameof(RestaurantId)) }; }
    } = RestaurantId;

    public string AdvCampaignId
    {
        get;
        init { field = value; Key = Key with { CampaignId = ParseId(value, nameof(AdvCampaignId)) }; }
    } = AdvCampaignId;

    public CampaignKey Key { get; private init; } =
        new(ParseId(RestaurantId, nameof(RestaurantId)), ParseId(AdvCampaignId, nameof(AdvCampaignId)));

    /// <summary>Contract section 4: the start second is inside the window, the end second is not.</summary>
    public bool IsActiveAt(long nowUnixSeconds) => DatetimeStart <= nowUnixSeconds && nowUnixSeconds < DatetimeEnd;

    private static Guid ParseId(string value, string parameter) =>
        CampaignParser.TryParseUuid(value, out var id) ? id : throw new ArgumentException("not canonical UUID text", parameter);
}

/// <summary>
/// Validates one input message. The feed is written by other teams and arrives over the network, so every byte
/// sequence must end in either a campaign or a reason, never an exception that would stop the pipeline.
/// </summary>
internal static class CampaignParser
{
    // Unix seconds of 9999-12-31T23:59:59Z: the last second DateTimeOffset (and therefore every consumer) can represent.
    internal const long MaxUnixSeconds = 253402300799;
    private const int MaxExceptionText = 200;

    private enum Field { RestaurantId, AdvCampaignId, Content, Owner, OwnerContact, DatetimeStart, DatetimeEnd, DatetimeCreated }

    private const int FieldCount = 8;
    private const int TextFieldCount = 5; // the first five Field values are strings, the rest integers

    private static readonly string[] Names =
    [
        "restaurant_id", "adv_campaign_id", "adv_campaign_content", "adv_campaign_owner", "adv_campaign_owner_contact",
        "adv_campaign_datetime_start", "adv_campaign_datetime_end", "datetime_created",
    ];

    private static readonly byte[][] Utf8Names = Array.ConvertAll(Names, Encoding.UTF8.GetBytes);

    /// <summary>The eight values as they are read; a campaign is built only once all of them are present and valid.</summary>
    private sealed class Values
    {
        public readonly string?[] Texts = new string?[TextFieldCount];
        public readonly long[] Integers = new long[FieldCount - TextFieldCount];
        public readonly bool[] Seen = new bool[FieldCount];

        public long Integer(Field f) => Integers[(int)f - TextFieldCount];
        public string Text(Field f) => Texts[(int)f]!;
    }

    public static bool TryParse(ReadOnlySpan<byte> utf8Json, out Campaign? campaign, out string reason)
    {
        campaign = null;
        var values = new Values();
        reason = Validate(utf8Json, values) ?? "";
        if (reason.Length > 0) return false;
        campaign = new Campaign(values.Text(Field.RestaurantId), values.Text(Field.AdvCampaignId), values.Text(Field.Content),
            values.Text(Field.Owner), values.Text(Field.OwnerContact), values.Integer(Field.DatetimeStart),
            values.Integer(Field.DatetimeEnd), values.Integer(Field.DatetimeCreated));
        return true;
    }

    /// <summary>Null when valid. Syntax problems win over field problems: a cut-off message is reported as cut off.</summary>
    private static string? Validate(ReadOnlySpan<byte> utf8Json, Values values)
    {
        // Checked up front: the reader does not validate UTF-8 inside strings, and unknown fields are never decoded.
        if (!Utf8.IsValid(utf8Json)) return "payload is not valid UTF-8";
        string? fieldProblem;
        try
        {
            fieldProblem = ReadObject(utf8Json, values);
        }
        catch (JsonException e)
        {
            return "invalid JSON: " + WithoutPayload(e.Message);
        }
        return fieldProblem ?? FirstMissing(values) ?? CheckWindow(values);
    }

    /// <summary>
    /// Reads the whole payload even after the first field problem, so that a syntax error further on still throws
    /// (and wins). Returns the first field problem in document order.
    /// </summary>
    private static string? ReadObject(ReadOnlySpan<byte> utf8Json, Values values)
    {
        // Default options on purpose: maximum depth 64, no comments, no trailing commas, exactly one top-level value.
        var reader = new Utf8JsonReader(utf8Json);
        reader.Read();
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            reader.Skip();
            RequireEnd(ref reader);
            return "payload is not a JSON object";
        }
        string? problem = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var field = Identify(ref reader);
            reader.Read();
            if (field is { } known && problem is null) problem = Store(known, ref reader, values);
            reader.Skip(); // unknown fields and wrongly typed containers alike, whatever their nesting
        }
        RequireEnd(ref reader);
        return problem;
    }

    private static void RequireEnd(ref Utf8JsonReader reader)
    {
        // With default options the reader itself throws on anything but whitespace after the value; this only guards
        // against that default ever changing.
        if (reader.Read()) throw new JsonException("unexpected data after the JSON value.");
    }

    private static Field? Identify(ref Utf8JsonReader reader)
    {
        for (var i = 0; i < FieldCount; i++)
            if (NameEquals(ref reader, Utf8Names[i])) return (Field)i;
        return null;
    }

    private static bool NameEquals(ref Utf8JsonReader reader, byte[] name)
    {
        // ValueTextEquals compares the unescaped name, so "restaurant\u005fid" is restaurant_id (and counts as a
        // duplicate). It throws on an escaped unpaired surrogate, which no field name contains: that name is unknown.
        try
        {
            return reader.ValueTextEquals(name);
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static string? Store(Field field, ref Utf8JsonReader reader, Values values)
    {
        var name = Names[(int)field];
        if (values.Seen[(int)field]) return $"duplicate field {name}";
        values.Seen[(int)field] = true;
        if (reader.TokenType == JsonTokenType.Null) return $"field {name} is null";
        return (int)field < TextFieldCount
            ? StoreText(field, name, ref reader, values)
            : StoreInteger(field, name, ref reader, values);
    }

    private static string? StoreText(Field field, string name, ref Utf8JsonReader reader, Values values)
    {
        if (reader.TokenType != JsonTokenType.String) return $"field {name} must be a string";
        if (!TryGetString(ref reader, out var text)) return $"field {name} is not valid Unicode";
        if (string.IsNullOrWhiteSpace(text)) return $"field {name} is empty";
        // Shape only: Guid parsing happens once, in the Campaign constructor, and cannot fail for this shape.
        if (field is (Field.RestaurantId or Field.AdvCampaignId) && !IsUuidText(text)) return $"field {name} is not a UUID";
        // Valid JSON ("\u0000"), but PostgreSQL text cannot hold it: accepting it would make every write of the batch fail.
        if (text.Contains('\0')) return $"field {name} contains a NUL character";
        values.Texts[(int)field] = text;
        return null;
    }

    private static bool TryGetString(ref Utf8JsonReader reader, out string text)
    {
        // An escaped lone surrogate ("\ud800") is well-formed JSON but has no UTF-8 form, so it cannot be passed on.
        try
        {
            text = reader.GetString()!;
            return true;
        }
        catch (InvalidOperationException)
        {
            text = "";
            return false;
        }
    }

    private static string? StoreInteger(Field field, string name, ref Utf8JsonReader reader, Values values)
    {
        // 1659203516.0 and 1.6e9 are numbers but not integers in the contract; rejecting them avoids guessing at rounding.
        if (reader.TokenType != JsonTokenType.Number || reader.ValueSpan.IndexOfAny(".eE"u8) >= 0)
            return $"field {name} must be an integer";
        // Only digits are left, so a failure here is an integer too long for Int64: out of range rather than wrongly typed.
        if (!reader.TryGetInt64(out var value) || value < 1 || value > MaxUnixSeconds) return $"field {name} is out of range";
        values.Integers[(int)field - TextFieldCount] = value;
        return null;
    }

    private static string? FirstMissing(Values values)
    {
        for (var i = 0; i < FieldCount; i++)
            if (!values.Seen[i]) return $"missing field {Names[i]}";
        return null;
    }

    private static string? CheckWindow(Values values) =>
        values.Integer(Field.DatetimeEnd) > values.Integer(Field.DatetimeStart)
            ? null
            : "adv_campaign_datetime_end must be after adv_campaign_datetime_start";

    /// <summary>
    /// Canonical 8-4-4-4-12 hex text only. Guid.TryParseExact("D") alone also accepts surrounding whitespace and "+" or
    /// "0x" inside groups, which would let two different strings (two database rows) map to one key.
    /// </summary>
    internal static bool TryParseUuid(string? text, out Guid id)
    {
        id = default;
        return IsUuidText(text) && Guid.TryParseExact(text, "D", out id);
    }

    private static bool IsUuidText([NotNullWhen(true)] string? text)
    {
        if (text is not { Length: 36 }) return false;
        for (var i = 0; i < text.Length; i++)
        {
            var hyphen = i is 8 or 13 or 18 or 23;
            if (hyphen ? text[i] != '-' : !char.IsAsciiHexDigit(text[i])) return false;
        }
        return true;
    }

    /// <summary>
    /// The reason travels in a Kafka header and in logs, so it must not carry payload text. The reader's messages quote
    /// at most one offending token at their start ("'x' is invalid after ..."); a single character is kept because it
    /// helps (a '0xEF' is a byte order mark), anything longer (an invalid literal quotes the rest of the payload) is
    /// replaced. The result is printable ASCII and capped.
    /// </summary>
    internal static string WithoutPayload(string message)
    {
        var text = message;
        var quoteEnd = text.StartsWith('\'') ? text.LastIndexOf("' is ", StringComparison.Ordinal) : -1;
        if (quoteEnd > 0 && !IsSingleCharacterQuote(text.AsSpan(1, quoteEnd - 1))) text = "'...'" + text[(quoteEnd + 1)..];
        return PrintableAscii(text.Length > MaxExceptionText ? text[..MaxExceptionText] : text);
    }

    // The reader prints one byte either as itself or, when not printable, as "0xNN".
    private static bool IsSingleCharacterQuote(ReadOnlySpan<char> quoted) =>
        quoted.Length == 1 || (quoted.Length == 4 && quoted.StartsWith("0x") && char.IsAsciiHexDigit(quoted[2]) && char.IsAsciiHexDigit(quoted[3]));

    private static string PrintableAscii(string text) =>
        string.Create(text.Length, text, static (span, source) =>
        {
            for (var i = 0; i < span.Length; i++) span[i] = source[i] is >= ' ' and <= '~' ? source[i] : '?';
        });
}

/// <summary>
/// The output record (contract 3b) of one campaign for any subscriber. One campaign fans out to many clients, so
/// everything except the client id is serialized once here, and For only copies: prefix, escaped id, suffix.
/// </summary>
internal sealed class NotificationTemplate
{
    private readonly byte[] _prefix; // {"restaurant_id":"...", ... ,"datetime_created":N,"client_id":"
    private readonly byte[] _suffix; // ","trigger_datetime_created":T}

    public NotificationTemplate(Campaign campaign, long triggerDatetimeCreated)
    {
        _prefix = Prefix(campaign);
        _suffix = Suffix(triggerDatetimeCreated);
    }

    /// <summary>The complete JSON value for one subscriber, in a fresh array of exactly its size.</summary>
    public byte[] For(string clientId) => Into(clientId, []);

    /// <summary>As <see cref="For"/>, but written into <paramref name="buffer"/> when that is exactly the size needed.</summary>
    public byte[] Into(string clientId, byte[] buffer)
    {
        ArgumentNullException.ThrowIfNull(clientId);
        // Client ids are UUIDs in practice, which need no escaping: encode them straight into the result.
        var utf8Length = JsonText.Utf8.GetByteCount(clientId);
        var size = _prefix.Length + utf8Length + _suffix.Length;
        var result = Sized(buffer, size);
        var id = result.AsSpan(_prefix.Length, utf8Length);
        JsonText.Utf8.GetBytes(clientId, id);
        if (!JsonText.NeedsEscaping(id))
        {
            _prefix.CopyTo(result, 0);
            _suffix.CopyTo(result, _prefix.Length + utf8Length);
            return result;
        }
        return WithEscapedId(id);
    }

    /// <summary>The notification's key, the client id in UTF-8, written into <paramref name="buffer"/> when that is exactly the size needed.</summary>
    public static byte[] KeyInto(string clientId, byte[] buffer)
    {
        var result = Sized(buffer, JsonText.Utf8.GetByteCount(clientId));
        JsonText.Utf8.GetBytes(clientId, result);
        return result;
    }

    // librdkafka copies a record while it is produced, so the caller may hand the same arrays in for the next one.
    private static byte[] Sized(byte[] buffer, int size) => buffer.Length == size ? buffer : GC.AllocateUninitializedArray<byte>(size);

    // The rare id with quotes, backslashes or control characters (the column is an unconstrained varchar).
    private byte[] WithEscapedId(ReadOnlySpan<byte> utf8Id)
    {
        var escapedLength = JsonText.EscapedLength(utf8Id);
        var result = GC.AllocateUninitializedArray<byte>(_prefix.Length + escapedLength + _suffix.Length);
        _prefix.CopyTo(result, 0);
        JsonText.Escape(utf8Id, result.AsSpan(_prefix.Length, escapedLength));
        _suffix.CopyTo(result, _prefix.Length + escapedLength);
        return result;
    }

    private static byte[] Prefix(Campaign c)
    {
        var w = new ArrayBufferWriter<byte>(256 + 2 * (c.Content.Length + c.Owner.Length + c.OwnerContact.Length));
        w.Write("{\"restaurant_id\":\""u8);
        JsonText.WriteEscaped(w, c.RestaurantId);
        w.Write("\",\"adv_campaign_id\":\""u8);
        JsonText.WriteEscaped(w, c.AdvCampaignId);
        w.Write("\",\"adv_campaign_content\":\""u8);
        JsonText.WriteEscaped(w, c.Content);
        w.Write("\",\"adv_campaign_owner\":\""u8);
        JsonText.WriteEscaped(w, c.Owner);
        w.Write("\",\"adv_campaign_owner_contact\":\""u8);
        JsonText.WriteEscaped(w, c.OwnerContact);
        w.Write("\",\"adv_campaign_datetime_start\":"u8);
        JsonText.WriteInteger(w, c.DatetimeStart);
        w.Write(",\"adv_campaign_datetime_end\":"u8);
        JsonText.WriteInteger(w, c.DatetimeEnd);
        w.Write(",\"datetime_created\":"u8);
        JsonText.WriteInteger(w, c.DatetimeCreated);
        w.Write(",\"client_id\":\""u8);
        return w.WrittenSpan.ToArray();
    }

    private static byte[] Suffix(long triggerDatetimeCreated)
    {
        var w = new ArrayBufferWriter<byte>(64);
        w.Write("\",\"trigger_datetime_created\":"u8);
        JsonText.WriteInteger(w, triggerDatetimeCreated);
        w.Write("}"u8);
        return w.WrittenSpan.ToArray();
    }
}

/// <summary>
/// JSON string escaping of UTF-8 text, minimal per RFC 8259: quote, backslash and U+0000..U+001F. Not
/// JavaScriptEncoder.UnsafeRelaxedJsonEscaping, because that escapes every character outside the Basic Multilingual
/// Plane (an emoji becomes "\ud83c\udf55"); the output keeps all other text, emoji included, as raw UTF-8.
/// </summary>
internal static class JsonText
{
    // Default replacement fallback: an unpaired surrogate in a .NET string becomes U+FFFD instead of invalid UTF-8.
    public static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    private static readonly SearchValues<byte> Special = SearchValues.Create(
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
         (byte)'"', (byte)'\\']);

    // Every byte of a multi-byte UTF-8 sequence is >= 0x80, so scanning bytes never splits a character.
    public static bool NeedsEscaping(ReadOnlySpan<byte> utf8) => utf8.IndexOfAny(Special) >= 0;

    public static void WriteEscaped(IBufferWriter<byte> writer, string text)
    {
        var utf8 = Utf8.GetBytes(text);
        var length = EscapedLength(utf8);
        Escape(utf8, writer.GetSpan(length));
        writer.Advance(length);
    }

    public static void WriteInteger(IBufferWriter<byte> writer, long value)
    {
        value.TryFormat(writer.GetSpan(20), out var written, default, CultureInfo.InvariantCulture);
        writer.Advance(written);
    }

    public static int EscapedLength(ReadOnlySpan<byte> utf8)
    {
        var length = utf8.Length;
        foreach (var b in utf8)
            if (b < 0x20 || b == '"' || b == '\\') length += ShortEscape(b) != 0 ? 1 : 5;
        return length;
    }

    /// <summary>Writes exactly EscapedLength(utf8) bytes.</summary>
    public static void Escape(ReadOnlySpan<byte> utf8, Span<byte> destination)
    {
        var at = 0;
        while (true)
        {
            var plain = utf8.IndexOfAny(Special);
            if (plain < 0) plain = utf8.Length;
            utf8[..plain].CopyTo(destination[at..]);
            at += plain;
            if (plain == utf8.Length) return;
            at += EscapeOne(utf8[plain], destination[at..]);
            utf8 = utf8[(plain + 1)..];
        }
    }

    private static int EscapeOne(byte b, Span<byte> destination)
    {
        destination[0] = (byte)'\\';
        var letter = ShortEscape(b);
        if (letter != 0)
        {
            destination[1] = letter;
            return 2;
        }
        "u00"u8.CopyTo(destination[1..]);
        destination[4] = HexDigit(b >> 4);
        destination[5] = HexDigit(b & 0xF);
        return 6;
    }

    private static byte ShortEscape(byte b) => b switch
    {
        (byte)'"' => (byte)'"',
        (byte)'\\' => (byte)'\\',
        (byte)'\b' => (byte)'b',
        (byte)'\f' => (byte)'f',
        (byte)'\n' => (byte)'n',
        (byte)'\r' => (byte)'r',
        (byte)'\t' => (byte)'t',
        _ => 0,
    };

    private static byte HexDigit(int nibble) => (byte)(nibble < 10 ? '0' + nibble : 'a' + nibble - 10);
}
